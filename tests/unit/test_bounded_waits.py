"""Waits with a bound (issue 21, item 6): a snapshot behind another snapshot's lock says whom
it waits for, and --time-limit counts that wait."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest
from fakes import FakePodman

from warmctl import container_lock, snapshots, waiting
from warmctl.catalogue import Catalogue
from warmctl.errors import ExitCode, TimedOut
from warmctl.output import Progress


def hold_lock(directory: Path, container_id: str, holder_pid: str = "4242") -> int:
    """The lock as another warmctl holds it: an flock, its PID in the file."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / f"{container_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{holder_pid}\n".encode())
    return fd


def test_a_wait_for_the_lock_is_said_once_after_a_second_naming_container_lock_and_holder(
        private_container_locks: Path) -> None:
    held = hold_lock(private_container_locks, "c0ffee")
    said: list[tuple[float, str]] = []
    started = time.monotonic()
    acquired = threading.Event()

    def take() -> None:
        with container_lock.checkpointing(
                "c0ffee", shown_as="mc", waiting=lambda: None,
                say=lambda text: said.append((time.monotonic() - started, text))):
            acquired.set()

    worker = threading.Thread(target=take)
    worker.start()
    deadline = time.monotonic() + 10
    while not said:
        assert time.monotonic() < deadline, "never said that it waits"
        time.sleep(0.01)
    assert not acquired.is_set()
    os.close(held)  # the other warmctl finishes
    worker.join(timeout=10)
    assert acquired.is_set()
    ((after, text),) = said
    assert container_lock.NOTICE_AFTER <= after < container_lock.NOTICE_AFTER + 2
    assert text == (f"waiting for another warmctl (pid 4242) to finish checkpointing container "
                    f"mc (lock {private_container_locks / 'c0ffee.lock'})")


def test_a_free_lock_is_taken_at_once_silently_and_names_its_holder(
        private_container_locks: Path) -> None:
    said: list[str] = []
    with container_lock.checkpointing("c0ffee", waiting=lambda: said.append("waiting"),
                                      say=said.append) as waited:
        assert not waited
        content = (private_container_locks / "c0ffee.lock").read_text()
    assert said == [] and content == f"{os.getpid()}\n"


def test_the_time_limit_counts_the_wait_for_the_lock(private_container_locks: Path) -> None:
    held = hold_lock(private_container_locks, "c0ffee")
    try:
        started = time.monotonic()
        with pytest.raises(TimedOut) as info, container_lock.checkpointing(
                "c0ffee", shown_as="mc", waiting=lambda: None, time_limit=0.3,
                started=started, say=lambda _: None):
            pytest.fail("took a lock that another process holds")
        assert time.monotonic() - started < 2
    finally:
        os.close(held)
    assert info.value.exit_code == ExitCode.TIMED_OUT and int(ExitCode.TIMED_OUT) == 124
    assert "another warmctl (pid 4242)" in info.value.message
    assert "container mc" in info.value.message and "nothing was done" in info.value.message


def test_a_snapshot_behind_a_held_lock_times_out_with_nothing_done(
        catalogue: Catalogue, fake_podman: FakePodman, usable_criu: None,
        private_container_locks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = fake_podman.add("mc")
    held = hold_lock(private_container_locks, info.id)
    try:
        started = time.monotonic()
        with pytest.raises(TimedOut) as raised:
            snapshots.take_snapshot(catalogue, fake_podman, "mc", "mc", snapshots.SnapshotOptions(
                leave_running=True, time_limit=1.5), Progress())
        waited = time.monotonic() - started
    finally:
        os.close(held)
    assert 1.5 <= waited < 4
    assert "finish checkpointing container mc" in raised.value.message
    assert not any(call.startswith("checkpoint") for call in fake_podman.calls)
    assert catalogue.list_snapshots() == []
    # Past a second it said so on stderr, where a journal or a terminal shows it.
    assert "warmctl: waiting for another warmctl (pid 4242) to finish checkpointing container mc" \
        in capsys.readouterr().err


def test_the_time_limit_left_after_the_wait_bounds_the_checkpoint(
        catalogue: Catalogue, fake_podman: FakePodman, usable_criu: None,
        private_container_locks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One --time-limit for the whole snapshot: what the lock's wait used is not given again
    to podman's checkpoint."""
    info = fake_podman.add("mc")
    calls: list[tuple[float | None, float | None]] = []
    real_init = waiting.PodmanCall.__init__

    def recording_init(self: object, *args: object, **kwargs: object) -> None:
        calls.append((kwargs.get("time_limit"), kwargs.get("started")))  # type: ignore[arg-type]
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(waiting.PodmanCall, "__init__", recording_init)
    before = time.monotonic()
    snapshots.take_snapshot(catalogue, fake_podman, "mc", "mc", snapshots.SnapshotOptions(
        leave_running=True, time_limit=30), Progress())
    ((limit, started),) = calls
    assert limit == 30 and started is not None and before <= started <= time.monotonic()
    assert info.id  # the snapshot went through the lock
