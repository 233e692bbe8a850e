"""Bad input and odd surroundings through the real CLI on a real podman: one line, a documented
exit status, and nothing done that the answer does not say."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from support import IMAGES, Containers, Warmctl, podman

pytestmark = pytest.mark.podman


def start_looper(containers: Containers, what: str = "looper") -> str:
    name = containers.name(what)
    podman("run", "--detach", "--name", name, IMAGES["busybox"], "sh", "-c",
           "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done")
    return name


def run_with_stdout(warmctl: Warmctl, stdout: int | None, *args: str,
                    close_stdout: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warmctl", *args], stdout=stdout, stderr=subprocess.PIPE,
        text=True, env=warmctl.env, check=False, timeout=600, stdin=subprocess.DEVNULL,
        preexec_fn=(lambda: os.close(1)) if close_stdout else None)


def test_snapshot_with_stdout_closed_is_recorded_and_exits_0(
        warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    result = run_with_stdout(warmctl, None, "snapshot", looper, "closed", "--leave-running",
                             close_stdout=True)
    assert result.returncode == 0, result.stderr
    assert "standard output is closed" in result.stderr
    assert [e["ref"] for e in warmctl("list", "--json").json()] == ["closed@1"]


def test_snapshot_into_a_pipe_whose_reader_left_is_recorded_and_exits_0(
        warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = run_with_stdout(warmctl, write_end, "snapshot", looper, "piped",
                                 "--leave-running")
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert [e["ref"] for e in warmctl("list", "--json").json()] == ["piped@1"]


@pytest.mark.parametrize("json_mode", [False, True], ids=["ref", "json"])
def test_snapshot_whose_result_cannot_be_written_is_recorded_and_exits_0(
        warmctl: Warmctl, containers: Containers, json_mode: bool) -> None:
    looper = start_looper(containers)
    with open("/dev/full", "w") as full:  # every write fails: ENOSPC
        result = run_with_stdout(warmctl, full.fileno(), "snapshot", looper, "full",
                                 "--leave-running", *(["--json"] if json_mode else []))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("warmctl: warning: the result could not be printed on standard "
                             "output (No space left on device); what was done stands\n")
    assert [e["ref"] for e in warmctl("list", "--json").json()] == ["full@1"]


def test_publish_specs_are_judged_as_podman_judges_them(containers: Containers) -> None:
    # The unit tests' table of podman's verdicts, asked of the real podman here.
    specs = runpy.run_path(str(Path(__file__).parents[1] / "unit" / "publish_specs.py"))
    accepted: list[str] = specs["PUBLISH_ACCEPTED"]
    refused: list[str] = specs["PUBLISH_REFUSED"]

    from warmctl.errors import UsageError
    from warmctl.podman_input import validate_publish

    disagreements = []
    for index, spec in enumerate(accepted + refused):
        name = containers.name(f"p{index}")
        podman_accepts = podman("create", "--name", name, "--publish", spec, IMAGES["busybox"],
                                "true", check=False).returncode == 0
        try:
            validate_publish(spec)
            we_accept = True
        except UsageError:
            we_accept = False
        if podman_accepts != we_accept:
            disagreements.append((spec, podman_accepts))
    assert disagreements == []


def test_resume_under_a_name_podman_would_refuse_creates_nothing(
        warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "named", "--leave-running")
    bad = f"{containers.prefix} bad!"
    for name in (bad, ""):
        result = warmctl("resume", "named", "--name", name, check=False)
        assert result.returncode == 2, result.stderr
        assert "invalid container name" in result.stderr
    assert containers.state(bad) is None
    listed = podman("ps", "--all", "--format", "{{.Names}}").stdout.split("\n")
    assert [n for n in listed if n.startswith(containers.prefix)] == [looper]
    result = warmctl("resume", "named", "--name", containers.name("x"), "--publish", "notaport",
                     check=False)
    assert result.returncode == 2, result.stderr
    assert containers.state(containers.name("x")) is None


def test_doctor_with_a_missing_probe_image_says_only_that(warmctl: Warmctl) -> None:
    result = warmctl("doctor", "--probe-image", "localhost/warmctl-test/no-such-image",
                     check=False)
    assert result.returncode == 3, result.stderr
    assert "checkpointing cannot work here" not in result.stderr
    assert result.stderr.startswith("warmctl: error: the probe did not run: image "
                                    "localhost/warmctl-test/no-such-image is not on this host")
    assert "probe-image" in result.stdout
    # A host fault next to it still says that checkpointing cannot work.
    broken = warmctl("doctor", "--probe-image", "localhost/warmctl-test/no-such-image",
                     check=False, env={"WARMCTL_PODMAN": "/bin/false"})
    assert broken.returncode == 6
    assert "checkpointing cannot work here" in broken.stderr


def test_errors_about_a_damaged_archive_name_the_snapshot_and_its_archive(
        warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "dmg", "--leave-running")
    archive = warmctl.home / "archives" / "dmg@1.tar"
    whole = archive.read_bytes()
    archive.write_bytes(whole[:100])  # cut short
    for args in (["show", "dmg"], ["resume", "dmg", "--name", containers.name("r")]):
        result = warmctl(*args, check=False)
        assert result.returncode == 5, result.stderr
        assert f"dmg@1's archive ({archive}) is damaged or truncated: 100 bytes that " \
               "decompress to no tar data" in result.stderr
        assert ".hold" not in result.stderr and str(warmctl.home / "tmp") not in result.stderr
    corrupt = bytearray(whole)
    corrupt[len(whole) // 2 : len(whole) // 2 + 64] = bytes(64)
    archive.write_bytes(bytes(corrupt))
    result = warmctl("show", "dmg", check=False)
    assert result.returncode == 5
    assert result.stderr.startswith(f"warmctl: error: dmg@1's archive ({archive}) is damaged")
    assert containers.state(containers.name("r")) is None


def test_show_warns_when_the_archive_is_another_snapshots(
        warmctl: Warmctl, containers: Containers) -> None:
    first, second = start_looper(containers, "one"), start_looper(containers, "two")
    warmctl("snapshot", first, "one", "--leave-running")
    warmctl("snapshot", second, "two")  # stopped: both ways of taking one are compared
    for ref in ("one", "two"):
        shown = warmctl("show", ref)
        assert shown.stderr == "", shown.stderr  # an archive that matches: not a word
        assert warmctl("show", ref, "--json").json()["archive_disagreements"] == []
    archives = warmctl.home / "archives"
    (archives / "one@1.tar").write_bytes((archives / "two@1.tar").read_bytes())
    shown = warmctl("show", "one")
    assert shown.returncode == 0
    assert shown.stderr.startswith("warmctl: warning: one@1's archive does not match its record")
    info = podman("container", "inspect", "--format", "{{.Id}}", second).stdout.strip()
    assert f"container id {info[:12]}, recorded" in shown.stderr
    assert "warmctl verify one@1" in shown.stderr
    data = warmctl("show", "one", "--json").json()
    assert any("container id" in d for d in data["archive_disagreements"])
