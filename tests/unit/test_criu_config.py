"""CRIU's configuration for one podman command: what each command gets, that it reaches CRIU
through a criu wrapper on PATH, and that its files live exactly as long as the command."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from warmctl import criu_config
from warmctl.criu_config import (
    ANNOTATION,
    checkpoint_options,
    for_one_command,
    restore_options,
    spec_for_restore,
)
from warmctl.feed import ArchiveFeed
from warmctl.host import facts as host
from warmctl.ownership import owner_is_gone

RUNC = json.dumps({"runtime": "runc"}).encode()
SPEC = json.dumps({"ociVersion": "1.0.2", "annotations": {"io.container.manager": "libpod"}})


def annotations_of(spec: bytes) -> dict[str, str]:
    value = json.loads(spec)["annotations"]
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize(("tcp_established", "expected"), [
    (True, ["skip-in-flight"]),  # connections not yet accepted must not fail the dump
    (False, []),  # --no-tcp-established: CRIU refuses any connection
])
def test_what_a_snapshot_tells_criu(tcp_established: bool, expected: list[str]) -> None:
    assert checkpoint_options(tcp_established=tcp_established) == expected


@pytest.mark.parametrize(("tcp_established", "in_place", "expected"), [
    (False, False, ["auto-dedup", "tcp-close"]),
    (True, False, ["auto-dedup"]),
    (False, True, ["tcp-close"]),  # a failed restore in place must not punch podman's images
    (True, True, []),
])
def test_what_a_resume_tells_criu(tcp_established: bool, in_place: bool,
                                  expected: list[str]) -> None:
    assert restore_options(tcp_established=tcp_established, in_place=in_place) == expected


EARLIER = {"io.container.manager": "libpod", ANNOTATION: "/run/warmctl/criu/9-old.conf"}


@pytest.mark.parametrize("config", [RUNC, json.dumps({"runtime": "crun"}).encode()])
def test_an_earlier_resumes_file_is_dropped(config: bytes, private_criu_config: Path) -> None:
    """Earlier releases named the file in the spec: a snapshot of a container they resumed
    carries it, naming a file long gone, which would hide /etc/criu/runc.conf."""
    earlier = json.dumps({"annotations": {**EARLIER, ANNOTATION: str(private_criu_config / "9-o")}})
    assert annotations_of(spec_for_restore(config, earlier.encode())) == {
        "io.container.manager": "libpod"}


def test_a_spec_without_warmctls_file_is_left_as_it_is() -> None:
    assert spec_for_restore(RUNC, SPEC.encode()) == SPEC.encode()


def test_a_configuration_of_the_containers_own_is_kept() -> None:
    spec = json.dumps({"annotations": {ANNOTATION: "/etc/special-criu.conf"}}).encode()
    assert spec_for_restore(RUNC, spec) == spec


@pytest.mark.parametrize(("config", "spec"), [
    (b"not json", SPEC.encode()),
    (RUNC, b"not json"),
    (RUNC, b"[]"),
    (RUNC, b'{"annotations": []}'),
])
def test_what_is_not_podmans_json_is_left_to_podman(config: bytes, spec: bytes) -> None:
    assert spec_for_restore(config, spec) == spec


def test_the_wrapper_hands_criu_the_file_and_both_go_with_the_command(
    private_criu_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wrapper runs the criu podman would have run, with CRIU_CONFIG_FILE naming a
    private file that says the options; both are gone after the command."""
    fake_criu = tmp_path / "criu"
    fake_criu.write_text('#!/bin/sh\necho "$CRIU_CONFIG_FILE $*"\ncat "$CRIU_CONFIG_FILE"\n')
    fake_criu.chmod(0o755)
    monkeypatch.setattr(host, "criu_path", lambda: str(fake_criu))
    with for_one_command(["auto-dedup", "tcp-close"]) as bin_dir:
        assert bin_dir is not None and bin_dir.parent == private_criu_config
        ran = subprocess.run([bin_dir / "criu", "swrk", "3"], capture_output=True, text=True,
                             check=True, env={"PATH": os.defpath}).stdout.splitlines()
        conf = Path(ran[0].split()[0])
        assert ran[0].split()[1:] == ["swrk", "3"]
        assert ran[-2:] == ["auto-dedup", "tcp-close"]
        assert conf.parent == private_criu_config
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert stat.S_IMODE(private_criu_config.stat().st_mode) == 0o700
        assert stat.S_IMODE((bin_dir / "criu").stat().st_mode) == 0o700
        assert not owner_is_gone(conf)  # locked: no other command takes it for stale
    assert not conf.exists() and not bin_dir.exists()
    assert list(private_criu_config.iterdir()) == []


def test_each_command_gets_its_own_files() -> None:
    with for_one_command(["tcp-close"]) as first, for_one_command(["tcp-close"]) as second:
        assert first is not None and second is not None and first != second


def test_no_options_no_wrapper(private_criu_config: Path) -> None:
    with for_one_command([]) as bin_dir:
        assert bin_dir is None
    assert not private_criu_config.exists()


def test_the_hosts_own_configuration_is_not_hidden(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """CRIU reads CRIU_CONFIG_FILE besides runc's file: /etc/criu/runc.conf stays in force,
    and warmctl's options still reach CRIU."""
    runc_conf = tmp_path / "runc.conf"
    runc_conf.write_text("tcp-established\n")
    monkeypatch.setattr(criu_config, "RUNC_DEFAULT", runc_conf)
    with for_one_command(["tcp-close"]) as bin_dir:
        assert bin_dir is not None
    assert runc_conf.read_text() == "tcp-established\n"


def test_a_directory_others_can_enter_is_not_used(private_criu_config: Path) -> None:
    private_criu_config.mkdir(mode=0o755)
    private_criu_config.chmod(0o755)
    with for_one_command(["tcp-close"]) as bin_dir:
        assert bin_dir is None


def test_files_of_a_killed_warmctl_are_removed(private_criu_config: Path) -> None:
    """A file whose lock nobody holds was left by a warmctl that died (with its wrapper);
    one still locked is another command's, in progress."""
    private_criu_config.mkdir(mode=0o700)
    stale = private_criu_config / "0123456789abcdef.conf"
    stale.write_text("auto-dedup\n")
    stale.with_suffix(".bin").mkdir()
    alive = private_criu_config / "fedcba9876543210.conf"
    alive.write_text("auto-dedup\n")
    alive.with_suffix(".bin").mkdir()
    with alive.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with for_one_command(["tcp-close"]):
            pass
        assert not stale.exists() and not stale.with_suffix(".bin").exists()
        assert alive.exists() and alive.with_suffix(".bin").exists()


def test_the_feed_drops_an_earlier_resumes_file_without_one_of_its_own(
    tmp_path: Path, private_criu_config: Path
) -> None:
    members = {"config.dump": RUNC,
               "spec.dump": json.dumps({"annotations": {
                   ANNOTATION: str(private_criu_config / "9-old.conf")}}).encode()}
    path = tmp_path / "archive.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with ArchiveFeed(path, hashlib.sha256(path.read_bytes()).hexdigest()) as feed:
        served = feed.path.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(served)) as tar:
        spec = json.loads(tar.extractfile("spec.dump").read())  # type: ignore[union-attr]
    assert spec == {"annotations": {}}
