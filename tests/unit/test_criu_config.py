"""Resume's CRIU configuration (auto-dedup): which restores get it, and that its file lives
exactly as long as one restore."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import stat
import tarfile
from pathlib import Path

import pytest
from fakes import REAL_ARCHIVE

from warmctl import archive, criu_config
from warmctl.criu_config import ANNOTATION, for_one_restore, spec_for_restore
from warmctl.feed import ArchiveFeed
from warmctl.ownership import owner_is_gone

RUNC = json.dumps({"runtime": "runc"}).encode()
SPEC = json.dumps({"ociVersion": "1.0.2", "annotations": {"io.container.manager": "libpod"}})


def annotations_of(spec: bytes) -> dict[str, str]:
    value = json.loads(spec)["annotations"]
    assert isinstance(value, dict)
    return value


def test_the_spec_names_the_file_and_keeps_everything_else(private_criu_config: Path) -> None:
    conf = private_criu_config / "1-a.conf"
    spec = spec_for_restore(RUNC, SPEC.encode(), conf)
    assert annotations_of(spec) == {"io.container.manager": "libpod", ANNOTATION: str(conf)}
    assert json.loads(spec)["ociVersion"] == "1.0.2"


def test_a_spec_without_annotations_gets_them(private_criu_config: Path) -> None:
    conf = private_criu_config / "1-a.conf"
    spec = spec_for_restore(json.dumps({"runtime": "/usr/bin/runc"}).encode(), b"{}", conf)
    assert annotations_of(spec) == {ANNOTATION: str(conf)}


@pytest.mark.parametrize("config", [
    {"runtime": "crun"},  # crun with an old libcriu refuses any configuration file
    {"runtime": "/usr/local/bin/crun"},
    {},  # podman's default runtime: not known here
    {"runtime": 3},
])
def test_other_runtimes_keep_their_spec(config: dict[str, object], tmp_path: Path) -> None:
    assert spec_for_restore(json.dumps(config).encode(), SPEC.encode(), tmp_path / "x") == \
        SPEC.encode()


def test_a_configuration_of_the_containers_own_is_kept(private_criu_config: Path) -> None:
    spec = json.dumps({"annotations": {ANNOTATION: "/etc/special-criu.conf"}}).encode()
    assert spec_for_restore(RUNC, spec, private_criu_config / "1-a.conf") == spec


EARLIER = {"io.container.manager": "libpod", ANNOTATION: "/run/warmctl/criu/9-old.conf"}


def test_a_file_of_an_earlier_resume_is_replaced(private_criu_config: Path) -> None:
    """A snapshot of a resumed container carries the annotation warmctl gave it."""
    earlier = json.dumps({"annotations": {**EARLIER, ANNOTATION: str(private_criu_config / "9-o")}})
    conf = private_criu_config / "1-new.conf"
    assert annotations_of(spec_for_restore(RUNC, earlier.encode(), conf)) == {
        "io.container.manager": "libpod", ANNOTATION: str(conf)}


@pytest.mark.parametrize("config", [RUNC, json.dumps({"runtime": "crun"}).encode()])
def test_without_a_file_an_earlier_resumes_is_dropped(config: bytes,
                                                      private_criu_config: Path) -> None:
    """On a host with /etc/criu/runc.conf (or another runtime) the stale annotation would hide
    that file from the container: it goes."""
    earlier = json.dumps({"annotations": {**EARLIER, ANNOTATION: str(private_criu_config / "9-o")}})
    conf = None if config == RUNC else private_criu_config / "1-new.conf"
    assert annotations_of(spec_for_restore(config, earlier.encode(), conf)) == {
        "io.container.manager": "libpod"}


def test_without_a_file_a_spec_of_its_own_is_left_as_it_is() -> None:
    assert spec_for_restore(RUNC, SPEC.encode(), None) == SPEC.encode()


@pytest.mark.parametrize(("config", "spec"), [
    (b"not json", SPEC.encode()),
    (RUNC, b"not json"),
    (RUNC, b"[]"),
    (RUNC, b'{"annotations": []}'),
])
def test_what_is_not_podmans_json_is_left_to_podman(config: bytes, spec: bytes,
                                                    tmp_path: Path) -> None:
    assert spec_for_restore(config, spec, tmp_path / "x") == spec


def test_the_file_is_private_says_auto_dedup_and_goes_with_the_restore(
    private_criu_config: Path
) -> None:
    with for_one_restore() as path:
        assert path is not None and path.parent == private_criu_config
        assert path.read_text().splitlines()[-1] == "auto-dedup"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(private_criu_config.stat().st_mode) == 0o700
        assert not owner_is_gone(path)  # locked: no other resume takes it for stale
    assert not path.exists()
    assert list(private_criu_config.iterdir()) == []


def test_each_restore_gets_its_own_file() -> None:
    with for_one_restore() as first, for_one_restore() as second:
        assert first is not None and second is not None and first != second


def test_the_hosts_own_configuration_wins(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With /etc/criu/runc.conf the annotation would hide it from the container for good."""
    runc_conf = tmp_path / "runc.conf"
    runc_conf.write_text("tcp-established\n")
    monkeypatch.setattr(criu_config, "RUNC_DEFAULT", runc_conf)
    with for_one_restore() as path:
        assert path is None


def test_a_directory_others_can_enter_is_not_used(private_criu_config: Path) -> None:
    private_criu_config.mkdir(mode=0o755)
    private_criu_config.chmod(0o755)
    with for_one_restore() as path:
        assert path is None


def test_files_of_a_killed_warmctl_are_removed(private_criu_config: Path) -> None:
    """A file whose lock nobody holds was left by a warmctl that died; one still locked is
    another resume's, in progress."""
    private_criu_config.mkdir(mode=0o700)
    stale = private_criu_config / "0123456789abcdef.conf"
    stale.write_text("auto-dedup\n")
    alive = private_criu_config / "fedcba9876543210.conf"
    alive.write_text("auto-dedup\n")
    with alive.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with for_one_restore():
            pass
        assert not stale.exists()
        assert alive.exists()


def test_the_configuration_tar_carries_the_edited_spec(private_criu_config: Path) -> None:
    conf = private_criu_config / "1-a.conf"
    data = archive.configuration_tar(
        REAL_ARCHIVE, within=1 << 26,
        edit_spec=lambda config, spec: spec_for_restore(config, spec, conf))
    assert data is not None
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        spec = tar.extractfile("spec.dump").read()  # type: ignore[union-attr]
        config = json.loads(tar.extractfile("config.dump").read())  # type: ignore[union-attr]
    assert config["runtime"] == "runc"  # the recorded archive is runc's
    assert annotations_of(spec)[ANNOTATION] == str(conf)


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
