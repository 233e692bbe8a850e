"""Errors that name the cause: CRIU's fatal error rather than its benign noise, podman's line
without the runtime's command line or podman's warnings, and the fix for failures seen with
serving containers (devices, connections, processes of other users)."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from pathlib import Path

import pytest
from fakes import FakePodman, plain_archive_bytes

from warmctl import archive, container_lock, snapshots
from warmctl.catalogue import Catalogue
from warmctl.errors import CheckpointError, IntegrityError
from warmctl.host.diagnose import criu_errors, device_name, diagnose, shorten_runtime_command
from warmctl.output import Progress
from warmctl.podman import CommandResult, PodmanCLI
from warmctl.refs import Ref

RLIMIT = ("(00.294628) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: "
          "Operation not permitted")
KVM_LOG = f"""(00.000000) Version: 4.2.1
{RLIMIT}
(00.300000) Warn  (criu/files.c:100): something worth a warning
(00.501000) Error (criu/files-ext.c:96): Can't dump file 3 of that type [20600] (chr 10:232)
(00.501100) Error (criu/cr-dump.c:1545): Dump files (pid: 16840) failed with -1
(00.677195) Error (criu/cr-dump.c:1975): Dumping FAILED.
"""
# Recorded from podman 4.3.1 (ids shortened), with the net_cls warning HOST-NOTES describes.
NET_CLS = ('time="2026-12-01T21:40:24Z" level=warning msg="Failed to add conmon to cgroupfs '
           'sandbox cgroup: creating cgroup path for net_cls: mkdir '
           '/sys/fs/cgroup/net_cls/libpod_parent: read-only file system"')
RUNC_FAILED = (
    'time="2026-12-01T21:40:24Z" level=error msg="criu failed: type NOTIFY errno 0\\nlog file: '
    '/var/lib/containers/storage/overlay-containers/2f0a/userdata/dump.log"\n'
    "Error: `/usr/bin/runc checkpoint --image-path /var/lib/containers/storage/"
    "overlay-containers/2f0a/userdata/checkpoint --work-path /var/lib/containers/storage/"
    "overlay-containers/2f0a/userdata --leave-running --leave-running 2f0a` failed: "
    "exit status 1")


def test_the_fatal_error_is_the_first_that_is_not_benign() -> None:
    assert criu_errors(KVM_LOG.splitlines()) == [
        "Can't dump file 3 of that type [20600] (chr 10:232)",
        "Dump files (pid: 16840) failed with -1",
        "Dumping FAILED.",
    ]


def test_a_device_is_named_by_its_numbers(tmp_path: Path) -> None:
    (tmp_path / "char" / "10:232").mkdir(parents=True)
    (tmp_path / "char" / "10:232" / "uevent").write_text("MAJOR=10\nMINOR=232\nDEVNAME=kvm\n")
    assert device_name("chr", 10, 232, sys_dev=tmp_path) == "/dev/kvm"
    assert device_name("blk", 8, 0, sys_dev=tmp_path) == ""


def test_a_device_that_cannot_be_dumped_names_it() -> None:
    hint = diagnose(RUNC_FAILED, "\n".join(criu_errors(KVM_LOG.splitlines())))
    assert hint is not None and "(chr 10:232)" in hint and "close it" in hint
    if Path("/sys/dev/char/10:232").exists():
        assert "/dev/kvm (chr 10:232)" in hint


@pytest.mark.parametrize(("log", "expected"), [
    ("Error (criu/sk-inet.c:185): inet: In-flight connection (l) for 14196",
     "not yet accepted"),
    ("Error (criu/sk-inet.c:1000): inet: Connected TCP socket in image", "tcp-established keeps"),
    ("Error (criu/sk-unix.c:600): unix: External socket is used. Consider using "
     "--ext-unix-sk option.", "unix socket outside it"),
    ("Error (criu/cr-dump.c:300): Can't get rlimit 0: Operation not permitted",
     "CAP_SYS_RESOURCE"),
])
def test_failures_of_serving_containers_have_fixes(log: str, expected: str) -> None:
    hint = diagnose("", log)
    assert hint is not None and expected in hint, hint


def test_the_benign_rlimit_line_alone_explains_nothing() -> None:
    assert criu_errors([RLIMIT]) == []
    assert diagnose("", "\n".join(criu_errors([RLIMIT]))) is None


def test_the_runtimes_command_line_is_shortened() -> None:
    line = RUNC_FAILED.splitlines()[-1].removeprefix("Error: ")
    assert shorten_runtime_command(line) == "runc checkpoint failed: exit status 1"


def test_podmans_error_is_short_and_never_a_warning() -> None:
    podman = PodmanCLI()
    err = podman._error(CommandResult(["podman"], 125, "", f"{NET_CLS}\n{RUNC_FAILED}\n"),
                        "checkpoint of mc", CheckpointError)
    assert err.message == "checkpoint of mc failed: runc checkpoint failed: exit status 1"
    assert err.criu_log == Path(
        "/var/lib/containers/storage/overlay-containers/2f0a/userdata/dump.log")
    only_warning = podman._error(CommandResult(["podman"], 1, "", f"{NET_CLS}\n"),
                                 "podman ps", CheckpointError)
    assert only_warning.message == "podman ps failed"


def test_the_error_names_crius_fatal_error_and_keeps_the_log(
    catalogue: Catalogue, fake_podman: FakePodman, tmp_path: Path, usable_criu: None
) -> None:
    log = tmp_path / "dump.log"
    log.write_text(KVM_LOG)
    fake_podman.add("kvm")
    fake_podman.fail_checkpoint = CheckpointError(
        "checkpoint of kvm failed: runc checkpoint failed: exit status 1", stderr=RUNC_FAILED,
        criu_log=log)
    with pytest.raises(CheckpointError) as caught:
        snapshots.take_snapshot(catalogue, fake_podman, "kvm", "kvm", snapshots.SnapshotOptions(),
                                Progress())
    message = caught.value.message
    assert "CRIU: Can't dump file 3 of that type [20600] (chr 10:232)" in message
    assert "rlimit" not in message and "--image-path" not in message
    kept = caught.value.criu_log
    assert kept is not None and kept.parent == catalogue.logs_dir and f"log: {kept}" in message
    assert caught.value.hint is not None and "close it" in caught.value.hint
    assert len(message) < 300


def _without(members: set[str]) -> bytes:
    """The real archive's plain tar without ``members``, as podman exported it when two
    checkpoints of one container overlapped."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(plain_archive_bytes())) as source, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in source:
            if member.name not in members:
                tar.addfile(member, source.extractfile(member) if member.isreg() else None)
    return out.getvalue()


def test_the_quick_check_passes_a_whole_checkpoint_and_names_what_is_missing(
    tmp_path: Path
) -> None:
    whole = tmp_path / "whole.tar"
    whole.write_bytes(plain_archive_bytes())
    archive.verify_checkpoint_quickly(whole)
    partial = tmp_path / "partial.tar"
    partial.write_bytes(_without({"config.dump", "spec.dump"}))
    with pytest.raises(IntegrityError, match=r"no config\.dump, spec\.dump"):
        archive.verify_checkpoint_quickly(partial)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(plain_archive_bytes()[:-1024])
    with pytest.raises(IntegrityError):
        archive.verify_checkpoint_quickly(cut)


@pytest.mark.parametrize("leave_running", [True, False])
def test_an_incomplete_checkpoint_is_never_recorded(
    catalogue: Catalogue, fake_podman: FakePodman, usable_criu: None, leave_running: bool
) -> None:
    fake_podman.add("mc")
    fake_podman.exports = _without({"config.dump", "spec.dump"})
    with pytest.raises(CheckpointError) as caught:
        snapshots.take_snapshot(catalogue, fake_podman, "mc", "mc",
                                snapshots.SnapshotOptions(leave_running=leave_running),
                                Progress())
    assert caught.value.exit_code == 7
    assert "not complete, so it was not recorded" in caught.value.message
    assert "no config.dump, spec.dump" in caught.value.message
    assert catalogue.list_snapshots() == []
    # A checkpoint that stopped its container keeps what podman wrote, as for any failure.
    assert ("rescued" in caught.value.message) == (not leave_running)


def test_snapshot_and_resume_tell_criu_their_options(
    catalogue: Catalogue, fake_podman: FakePodman, usable_criu: None
) -> None:
    fake_podman.add("mc")
    snapshots.take_snapshot(catalogue, fake_podman, "mc", "mc",
                            snapshots.SnapshotOptions(leave_running=True), Progress())
    snapshots.take_snapshot(catalogue, fake_podman, "mc", "strict", snapshots.SnapshotOptions(
        leave_running=True, tcp_established=False), Progress())
    snapshots.resume_snapshot(catalogue, fake_podman, Ref("mc", None),
                              snapshots.ResumeOptions(name="clone"), Progress())
    snapshots.resume_snapshot(catalogue, fake_podman, Ref("mc", None), snapshots.ResumeOptions(
        name="kept", tcp_established=True), Progress())
    assert fake_podman.criu_configs == [
        ["skip-in-flight"], [], ["auto-dedup", "tcp-close"], ["auto-dedup"]]


def test_snapshots_of_one_container_wait_for_each_other(
    catalogue: Catalogue, fake_podman: FakePodman, usable_criu: None,
    private_container_locks: Path
) -> None:
    info = fake_podman.add("mc")
    phases: list[str] = []

    class Recorder(Progress):
        def phase(self, text: str) -> None:
            phases.append(text)

    with container_lock.checkpointing(info.id, waiting=lambda: None):
        done = threading.Event()

        def snapshot() -> None:
            # SQLite connections belong to their thread: the worker opens its own.
            with Catalogue(catalogue.home, lock_timeout=0.5).open() as own:
                snapshots.take_snapshot(own, fake_podman, "mc", "mc",
                                        snapshots.SnapshotOptions(leave_running=True),
                                        Recorder())
            done.set()

        worker = threading.Thread(target=snapshot)
        worker.start()
        deadline = time.monotonic() + 10
        while "waiting for another snapshot of mc to finish" not in phases:
            assert time.monotonic() < deadline, phases
            time.sleep(0.01)
        assert not done.is_set() and not any(c.startswith("checkpoint") for c in fake_podman.calls)
    worker.join(timeout=10)
    assert done.is_set() and [s.ref for s in catalogue.list_snapshots()] == ["mc@1"]
    assert (private_container_locks / f"{info.id}.lock").exists()
