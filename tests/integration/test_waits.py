"""Bounded waits (issue 21, item 6) and resume --max-age (item 9), through the real CLI on a
real podman. The other snapshot holding a container's lock is this test, holding the flock
itself: a checkpoint that hangs, for as long as the test likes."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import IMAGES, Containers, Warmctl, podman

from warmctl import container_lock

pytestmark = pytest.mark.podman


def start_looper(containers: Containers) -> tuple[str, str]:
    name = containers.name("looper")
    podman("run", "--detach", "--name", name, IMAGES["busybox"], "sh", "-c",
           "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done")
    container_id = podman("container", "inspect", "-f", "{{.Id}}", name).stdout.strip()
    return name, container_id


@contextmanager
def holding_checkpoint_lock(container_id: str) -> Iterator[Path]:
    """The container's checkpoint lock, held as a snapshot in progress holds it."""
    container_lock.DIRECTORY.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = container_lock.DIRECTORY / f"{container_id}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)


def test_a_snapshot_behind_a_held_lock_says_whom_it_waits_for_and_time_limit_ends_it(
        warmctl: Warmctl, containers: Containers) -> None:
    name, container_id = start_looper(containers)
    with holding_checkpoint_lock(container_id) as lock:
        started = time.monotonic()
        result = warmctl("snapshot", "--leave-running", "--time-limit", "3s", name, "looper",
                         check=False, timeout=60)
        took = time.monotonic() - started
    assert result.returncode == 124, result.stderr
    assert 3 <= took < 20
    waiting = (f"warmctl: waiting for another warmctl (pid {os.getpid()}) to finish "
               f"checkpointing container {name} (lock {lock})")
    assert waiting in result.stderr
    assert "the time limit (3s) passed" in result.stderr and "nothing was done" in result.stderr
    assert warmctl("list", "--json").json() == []
    assert containers.state(name) == "running"


def test_a_snapshot_waits_for_the_lock_saying_so_then_goes_on_when_it_is_free(
        warmctl: Warmctl, containers: Containers, tmp_path: Path) -> None:
    name, container_id = start_looper(containers)
    stderr_path = tmp_path / "stderr"
    with holding_checkpoint_lock(container_id), stderr_path.open("w") as stderr:
        waiter = subprocess.Popen(
            [sys.executable, "-m", "warmctl", "snapshot", "--leave-running", "--quiet", name,
             "looper"], stdout=subprocess.PIPE, stderr=stderr, text=True, env=warmctl.env,
            stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while "waiting for another warmctl" not in stderr_path.read_text():
                assert waiter.poll() is None, stderr_path.read_text()
                assert time.monotonic() < deadline, "never said that it waits"
                time.sleep(0.05)
            assert warmctl("list", "--json").json() == []  # nothing done while it waits
        except BaseException:
            waiter.kill()
            raise
    # The lock is free: the waiting snapshot goes on and is recorded.
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, stderr_path.read_text()
    assert out.strip() == "looper@1"
    assert containers.state(name) == "running"


def test_resume_max_age_refuses_an_old_snapshot_and_leaves_the_container_as_it_was(
        warmctl: Warmctl, containers: Containers) -> None:
    name, _ = start_looper(containers)
    warmctl("snapshot", name, "looper")  # stopping: the container holds its checkpoint
    with sqlite3.connect(warmctl.home / "catalogue.db") as db:  # as if taken 2 hours ago
        db.execute("UPDATE snapshots SET created = ?",
                   ((datetime.now(UTC) - timedelta(hours=2)).isoformat(),))
    refused = warmctl("resume", "--max-age", "1h", "looper", check=False)
    assert refused.returncode == 11
    assert refused.stderr.startswith("warmctl: error: snapshot looper@1 is 2h old, older than "
                                     "--max-age 1h: not resumed")
    assert containers.state(name) == "exited"  # untouched: still the checkpointed source
    assert warmctl("resume", "--max-age", "3h", "looper").stdout.strip() == name
    assert containers.state(name) == "running"
