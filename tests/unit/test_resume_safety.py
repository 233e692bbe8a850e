"""What resume (and snapshot, and warm) may destroy, and what an interruption leaves, against
a fake podman: the name lock, the mark on the container a resume creates, the retry's one
reason, Ctrl-C twice, the time limit, warm whose snapshot fails."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from fakes import FakePodman, plain_archive_bytes
from interrupts import Phases, press_ctrl_c

from warmctl import claim
from warmctl.catalogue import Catalogue
from warmctl.errors import (
    CheckpointError,
    ConflictError,
    ExitCode,
    Interrupted,
    LeftUnfinished,
    PodmanConflictError,
    TimedOut,
)
from warmctl.output import Progress
from warmctl.refs import Ref
from warmctl.snapshots import ResumeOptions, SnapshotOptions, resume_snapshot, take_snapshot
from warmctl.warm import ContainerSpec, WarmPlan, warm

pytestmark = pytest.mark.usefixtures("usable_criu")


def snapshot_of_a_running_mc(catalogue: Catalogue, podman: FakePodman) -> None:
    podman.add("mc")
    take_snapshot(catalogue, podman, "mc", "mc", SnapshotOptions(leave_running=True),
                  Progress())


def test_a_second_resume_to_a_name_being_resumed_exits_4_and_touches_nothing(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    snapshot_of_a_running_mc(catalogue, fake_podman)
    calls = len(fake_podman.calls)
    with claim.claim_name("copy"), pytest.raises(ConflictError) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"),
                        Progress())
    assert info.value.exit_code == ExitCode.CONFLICT
    assert "another warmctl is resuming a container named copy" in info.value.message
    assert fake_podman.calls[calls:] == []
    # Another name is free to resume meanwhile, and this one once the first is done.
    with claim.claim_name("copy"):
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="other"),
                        Progress())
    resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"), Progress())
    assert fake_podman.containers["copy"].running


def test_the_container_a_resume_created_carries_its_token(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    snapshot_of_a_running_mc(catalogue, fake_podman)
    resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"), Progress())
    token = fake_podman.containers["copy"].annotations[claim.ANNOTATION]
    assert len(token) == 32
    assert "mc" not in fake_podman.containers["mc"].annotations


@pytest.mark.parametrize("config_reads", [2, 1])
def test_a_container_that_took_the_name_meanwhile_is_neither_removed_nor_retried_over(
    catalogue: Catalogue, fake_podman: FakePodman, config_reads: int
) -> None:
    """Someone runs a container under the name while the resume reads the archive: podman
    refuses the restore (exit 4), and resume neither removes that container nor tries again
    (with one configuration read, the archive was never read: the old retry fired here)."""
    snapshot_of_a_running_mc(catalogue, fake_podman)
    fake_podman.config_reads = config_reads
    intruder = None

    def someone_takes_the_name() -> None:
        nonlocal intruder
        intruder = fake_podman.add("copy")

    fake_podman.while_running = someone_takes_the_name
    with pytest.raises(PodmanConflictError) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"),
                        Progress())
    assert info.value.exit_code == ExitCode.CONFLICT
    assert fake_podman.containers["copy"] == intruder
    assert [c for c in fake_podman.calls if c.startswith(("rm", "restore"))] == ["restore copy"]


def test_a_failed_restore_removes_the_container_it_created_by_id(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    snapshot_of_a_running_mc(catalogue, fake_podman)
    fake_podman.fail_restore = "Error: criu failed"
    with pytest.raises(CheckpointError):
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"),
                        Progress())
    assert "copy" not in fake_podman.containers
    assert fake_podman.calls[-1] == "rm id0002"  # by id, the one podman created


def test_a_failed_restore_leaves_an_unmarked_container_under_the_name_alone(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    """A podman that imports on its first read gets the configuration tar, fails for want
    of CRIU's images, and its (marked) container is removed; the retry with whole archives
    creates a container from the archive's own spec, with no token of this resume's: when
    that fails too, resume cannot tell the container is its own and leaves it."""
    snapshot_of_a_running_mc(catalogue, fake_podman)
    fake_podman.fail_restore = "Error: criu failed"
    fake_podman.config_reads = 0
    with pytest.raises(CheckpointError):
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"),
                        Progress())
    assert [c for c in fake_podman.calls if c.startswith(("rm", "restore"))] == \
        ["restore copy", "rm id0002", "restore copy"]
    assert claim.ANNOTATION not in fake_podman.containers["copy"].annotations


def test_ctrl_c_then_a_podman_failure_is_an_interruption_and_starts_no_new_restore(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    snapshot_of_a_running_mc(catalogue, fake_podman)
    fake_podman.config_reads = 1  # the failure below is the one the retry exists for
    phases = Phases()
    fake_podman.while_running = lambda: press_ctrl_c(phases)
    with pytest.raises(Interrupted) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"), phases)
    assert info.value.exit_code == ExitCode.INTERRUPTED
    assert info.value.message.startswith("interrupted, and meanwhile a complete checkpoint")
    assert [c for c in fake_podman.calls if c.startswith("restore")] == ["restore copy"]
    assert "copy" not in fake_podman.containers  # its failed container, removed by id


def test_ctrl_c_during_a_restore_lets_it_finish_and_says_the_container_runs(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    snapshot_of_a_running_mc(catalogue, fake_podman)
    phases = Phases()
    fake_podman.while_running = lambda: press_ctrl_c(phases)
    with pytest.raises(Interrupted) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"), phases)
    assert info.value.message == ("interrupted while podman restored copy: it finished, "
                                  "and copy is running")
    assert fake_podman.containers["copy"].running


def test_a_second_ctrl_c_during_a_restore_leaves_at_once_and_removes_nothing(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    snapshot_of_a_running_mc(catalogue, fake_podman)
    phases = Phases()
    release = threading.Event()

    def podman_runs_long() -> None:
        press_ctrl_c(phases, twice=True)
        release.wait(60)

    fake_podman.while_running = podman_runs_long
    with pytest.raises(LeftUnfinished) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"), phases)
    assert info.value.exit_code == ExitCode.INTERRUPTED
    assert "interrupted twice: warmctl left the restore of copy unfinished" in \
        info.value.message
    assert "had not read the whole archive" in info.value.message
    assert "podman rm copy" in info.value.message
    assert not any(call.startswith("rm") for call in fake_podman.calls)
    release.set()


def test_the_time_limit_on_a_restore_is_exit_124_naming_the_container(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    snapshot_of_a_running_mc(catalogue, fake_podman)
    release = threading.Event()

    def podman_hangs() -> None:
        release.wait(60)

    fake_podman.while_running = podman_hangs
    with pytest.raises(TimedOut) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"),
                        ResumeOptions(name="copy", time_limit=0.3), Progress())
    assert info.value.exit_code == 124
    assert info.value.message.startswith(
        "the restore of copy did not finish within the time limit (300ms)")
    assert "copy created but not running" in info.value.message
    release.set()


def test_a_second_ctrl_c_during_a_stopping_checkpoint_keeps_its_export_in_rescued(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    source = fake_podman.add("mc")
    phases = Phases()
    release = threading.Event()

    def podman_runs_long() -> None:  # the export is written, podman not done yet
        press_ctrl_c(phases, twice=True)
        release.wait(60)

    fake_podman.while_running = podman_runs_long
    with pytest.raises(LeftUnfinished) as info:
        take_snapshot(catalogue, fake_podman, "mc", "mc", SnapshotOptions(compress="none"),
                      phases)
    [rescued] = (catalogue.home / "rescued").iterdir()
    assert rescued.read_bytes() == plain_archive_bytes()
    assert f"its export goes to {rescued}" in info.value.message
    assert f"podman container restore {source.id[:12]}" in info.value.message
    assert catalogue.list_snapshots() == []
    assert list(catalogue.tmp_dir.iterdir()) == []
    release.set()


def test_a_second_ctrl_c_during_a_leave_running_checkpoint_says_it_runs_on(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.add("mc")
    phases = Phases()
    release = threading.Event()

    def podman_runs_long() -> None:
        press_ctrl_c(phases, twice=True)
        release.wait(60)

    fake_podman.while_running = podman_runs_long
    with pytest.raises(LeftUnfinished, match="frozen until CRIU has dumped it, then runs on"):
        take_snapshot(catalogue, fake_podman, "mc", "mc",
                      SnapshotOptions(compress="none", leave_running=True), phases)
    assert not (catalogue.home / "rescued").exists()
    release.set()


# --- warm ------------------------------------------------------------------------------------

def test_warm_keeps_the_warm_container_when_only_the_snapshot_fails(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.fail_checkpoint = "Error: criu failed: Can't dump file 3 of that type"
    plan = WarmPlan(spec=ContainerSpec(image="localhost/img", container="w"), name="warm",
                    snapshot=SnapshotOptions(leave_running=True, labels={"tier": "cache"}))
    with pytest.raises(CheckpointError) as info:
        warm(catalogue, fake_podman, plan, Progress())
    assert info.value.exit_code == ExitCode.PODMAN_FAILED
    assert "the warm container w is still running" in info.value.message
    assert info.value.hint is not None and info.value.hint.startswith(
        "retry: warmctl snapshot w warm --leave-running --label tier=cache")
    assert fake_podman.containers["w"].running
    assert not any(call.startswith("rm") for call in fake_podman.calls)
    assert catalogue.list_snapshots() == []


def test_warm_removes_its_container_by_id_and_never_one_that_took_the_name(
    catalogue: Catalogue, fake_podman: FakePodman, tmp_path: Path
) -> None:
    plan = WarmPlan(spec=ContainerSpec(image="localhost/img", container="w"), name="warm",
                    warmup="exit 3")
    with pytest.raises(Exception, match="warm-up command failed"):
        warm(catalogue, fake_podman, plan, Progress())
    assert fake_podman.calls[-1] == "rm id0001" and "w" not in fake_podman.containers
    # The name taken between warm's check and its podman run: podman refuses, nothing removed.
    original = fake_podman.run_detached

    def name_taken_meanwhile(image: str, **kwargs: object) -> str:
        fake_podman.add("w")
        return original(image, **kwargs)  # type: ignore[arg-type]

    fake_podman.run_detached = name_taken_meanwhile  # type: ignore[method-assign]
    with pytest.raises(PodmanConflictError):
        warm(catalogue, fake_podman, plan, Progress())
    assert "w" in fake_podman.containers
    assert fake_podman.calls[-1].startswith("run ")


def test_ctrl_c_while_verifying_before_a_replace_leaves_the_container_as_it_was(
    catalogue: Catalogue, fake_podman: FakePodman, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warmctl import snapshots

    snapshot_of_a_running_mc(catalogue, fake_podman)

    def ctrl_c(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(snapshots, "check_digest", ctrl_c)
    with pytest.raises(Interrupted) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(replace=True),
                        Progress())
    assert info.value.message == ("interrupted while verifying mc@1's archive: mc is as it "
                                  "was (running)")
    assert fake_podman.containers["mc"].running
    assert not any(call.startswith(("rm", "restore")) for call in fake_podman.calls)


def test_warm_left_by_its_time_limit_neither_removes_nor_inspects_the_container(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    release = threading.Event()

    def podman_hangs() -> None:
        release.wait(60)

    fake_podman.while_running = podman_hangs
    plan = WarmPlan(spec=ContainerSpec(image="localhost/img", container="w"), name="warm",
                    snapshot=SnapshotOptions(compress="none", time_limit=0.3))
    with pytest.raises(TimedOut, match="did not finish within the time limit"):
        warm(catalogue, fake_podman, plan, Progress())
    assert "w" in fake_podman.containers
    assert not any(call.startswith("rm") for call in fake_podman.calls)
    release.set()


@pytest.mark.parametrize("compress", ["none", "zstd"])
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_after_a_stopping_checkpoint_waits_for_the_recording_and_twice_rescues(
    catalogue: Catalogue, fake_podman: FakePodman, monkeypatch: pytest.MonkeyPatch,
    compress: str, presses: int,
) -> None:
    """podman has stopped the container; warmctl checks its export before recording it
    (after hashing it, or compressing it): the first Ctrl-C (or SIGTERM, SIGHUP) lets the
    snapshot be recorded, a second keeps the export in rescued/ at once."""
    from warmctl import archive

    fake_podman.add("mc")
    step = (archive, "verify_checkpoint_quickly")
    original = getattr(*step)

    def interrupted_meanwhile(*args: object, **kwargs: object) -> object:
        for _ in range(presses):
            os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode
        return original(*args, **kwargs)

    monkeypatch.setattr(*step, interrupted_meanwhile)
    phases = Phases()
    with pytest.raises(Interrupted) as info:
        take_snapshot(catalogue, fake_podman, "mc", "mc", SnapshotOptions(compress=compress),
                      phases)
    if presses == 1:
        assert info.value.message.startswith("interrupted after podman had stopped mc: its "
                                             "state is recorded as mc@1")
        assert [s.ref for s in catalogue.list_snapshots()] == ["mc@1"]
        assert "interrupted: recording the snapshot first (Ctrl-C again leaves at once)" \
            in phases.seen
    else:
        [rescued] = (catalogue.home / "rescued").iterdir()
        assert info.value.message.startswith("interrupted; the checkpoint had already stopped "
                                             f"the container: its memory is kept in {rescued}")
        assert catalogue.list_snapshots() == []
    assert list(catalogue.tmp_dir.iterdir()) == []
