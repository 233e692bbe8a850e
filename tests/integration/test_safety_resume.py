"""What resume and warm may destroy, and what Ctrl-C and the time limit leave, through the
real CLI on a real podman: a paused or self-exited source, two resumes racing for one name, a
warm whose snapshot fails, two real SIGINTs during a checkpoint and during a restore."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import (
    IMAGES,
    Containers,
    Warmctl,
    assert_all_back,
    podman,
    require_dev_kvm,
    start_memcached,
)

pytestmark = pytest.mark.podman

MIB = 1 << 20


def start_looper(containers: Containers, what: str = "looper") -> str:
    name = containers.name(what)
    podman("run", "--detach", "--name", name, IMAGES["busybox"], "sh", "-c",
           "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done")
    return name


def container_id(name: str) -> str:
    return podman("container", "inspect", "--format", "{{.Id}}", name).stdout.strip()


def containers_named(name: str) -> list[str]:
    """The ids of every container, in any state, whose name is exactly ``name``."""
    out = podman("ps", "--all", "--filter", f"name=^{name}$", "--format", "{{.ID}}").stdout
    return out.split()


def wait_for_state(containers: Containers, name: str, wanted: set[str | None],
                   timeout: float = 120) -> str | None:
    """Poll podman until the container is in one of the ``wanted`` states (None: gone)."""
    deadline = time.monotonic() + timeout
    while True:
        state = containers.state(name)
        if state in wanted:
            return state
        assert time.monotonic() < deadline, f"{name} stayed {state}, not one of {wanted}"
        time.sleep(0.1)




# --- what resume may replace -----------------------------------------------------------------

def test_resume_onto_a_paused_source_exits_4_and_the_paused_container_stays(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "pz", "--leave-running")
    before = container_id(looper)
    podman("pause", looper)
    result = warmctl("resume", "pz", check=False)
    assert result.returncode == 4, result.stderr
    assert result.stderr.startswith("warmctl: error: ")
    assert "is paused" in result.stderr and "--replace" in result.stderr
    assert containers.state(looper) == "paused"
    assert container_id(looper) == before
    # What it did after the snapshot is still there to go on with.
    podman("unpause", looper)
    assert containers.state(looper) == "running"


def test_a_source_that_exited_on_its_own_is_replaced_only_with_replace(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "gone", "--leave-running")
    before = container_id(looper)
    podman("stop", "--time", "0", looper)  # it exits, not by the snapshot's checkpoint
    assert containers.state(looper) == "exited"
    result = warmctl("resume", "gone", check=False)
    assert result.returncode == 4, result.stderr
    assert "exited on its own" in result.stderr
    assert container_id(looper) == before
    assert warmctl("resume", "gone", "--replace").stdout.strip() == looper
    assert containers.state(looper) == "running" and container_id(looper) != before


def test_a_source_started_again_after_the_snapshot_stopped_it_is_not_replaced(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "again")  # stops it, checkpointed
    podman("start", looper)  # a fresh start: what it does now is not in the snapshot
    result = warmctl("resume", "again", check=False)
    assert result.returncode == 4, result.stderr
    assert containers.state(looper) == "running"


def race(warmctl: Warmctl, *args: str) -> list[tuple[int, str]]:
    """Two `warmctl resume ARGS` started together; their exit codes and stderr."""
    procs = [warmctl.popen("resume", *args) for _ in range(2)]
    results = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        results.append((proc.returncode, err))
    return results


def test_two_resumes_to_one_name_leave_one_running_container_and_one_exit_4(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "twice", "--leave-running")
    podman("rm", "--force", "--time", "0", looper)  # both go through the archive
    for attempt in range(3):
        target = containers.name(f"copy{attempt}")
        results = race(warmctl, "twice", "--name", target)
        assert sorted(code for code, _ in results) == [0, 4], results
        [loser] = [err for code, err in results if code == 4]
        assert loser.startswith("warmctl: error: ") and target in loser
        [winner] = containers_named(target)
        assert containers.state(target) == "running"
        # The winner's container is intact: one restore, never removed and restored again.
        inspect = json.loads(podman("container", "inspect", target).stdout)[0]
        assert inspect["State"]["Restored"] is True
        assert inspect["Id"].startswith(winner)


def test_two_resumes_of_a_stopped_source_restore_it_once(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "inplace")  # stops it: both could restore it in place
    source = container_id(looper)
    results = race(warmctl, "inplace")
    assert sorted(code for code, _ in results) == [0, 4], results
    assert containers_named(looper) == [source[:12]]
    assert containers.state(looper) == "running"


# --- warm -------------------------------------------------------------------------------------

def test_warm_whose_snapshot_fails_keeps_the_warm_container_running(
    warmctl: Warmctl, containers: Containers
) -> None:
    """Ready once it holds /dev/kvm open, which CRIU cannot dump: only the snapshot fails."""
    require_dev_kvm()
    container = containers.name("kvm")
    result = warmctl(
        "warm", IMAGES["busybox"], "undumpable", "--container", container,
        "--podman-arg=--device=/dev/kvm",
        "--ready-exec", "test -e /tmp/ready", "--interval", "100ms", "--timeout", "1m",
        # A loop, not one long sleep: CRIU's failed dump interrupts the sleep, and trixie's
        # busybox sleep then exits (tests/unit/test_snapshots.py has that case).
        "--", "sh", "-c", "exec 3</dev/kvm; touch /tmp/ready; while :; do sleep 1; done",
        check=False,
    )
    assert result.returncode == 7, result.stderr
    assert warmctl("list", "--json").json() == []
    assert containers.state(container) == "running"
    assert "podman left the container" not in result.stderr
    assert f"the warm container {container} is still running" in result.stderr
    assert f"retry: warmctl snapshot {container} undumpable" in result.stderr


# --- Ctrl-C twice, and the time limit ----------------------------------------------------------

class Running:
    """warmctl started like a command at a terminal, its stderr read as it comes."""

    def __init__(self, warmctl: Warmctl, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*warmctl_argv(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**warmctl.env, **env}, stdin=subprocess.DEVNULL, process_group=0)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def ctrl_c(self) -> None:
        """SIGINT to the whole process group, as a terminal does (if warmctl is still there:
        podman may finish first)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)

    def wait_until(self, ready: object, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            assert self.proc.poll() is None, f"warmctl ended before {what}: {self.lines}"
            assert time.monotonic() < deadline, f"no {what} within {timeout}s"
            time.sleep(0.005)

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=600)
        self._reader.join(10)
        return code, "".join(self.lines)


def warmctl_argv() -> list[str]:
    return [sys.executable, "-m", "warmctl"]


def error_lines(stderr: str) -> list[str]:
    """The error lines (WARMCTL_DEBUG=1 adds debug lines and a traceback around them)."""
    return [line for line in stderr.splitlines() if line.startswith("warmctl: error:")]


def test_ctrl_c_twice_during_a_checkpoint_leaves_at_once_and_the_export_reaches_rescued(
    warmctl: Warmctl, containers: Containers
) -> None:
    name, port, items = start_memcached(containers, 512, seed=21)
    run = Running(warmctl, "snapshot", name, "twice", env={"WARMCTL_DEBUG": "1"})
    tmp = warmctl.home / "tmp"
    run.wait_until(lambda: tmp.exists() and any(p.stat().st_size > 0
                                                for p in tmp.glob("*.plain")),
                   "podman's export")
    run.ctrl_c()
    run.wait_until(lambda: run.said("interrupted: waiting for the checkpoint"),
                   "the first Ctrl-C taken")
    pressed = time.monotonic()
    run.ctrl_c()
    code, stderr = run.finish()
    left_after = time.monotonic() - pressed
    assert code == 130, stderr
    [message] = error_lines(stderr)
    assert message.startswith("warmctl: error: interrupted twice: warmctl left the checkpoint")
    assert "podman goes on checkpointing" in message and "nothing is recorded" in message
    assert left_after < 3, f"took {left_after:.1f}s to leave"
    [rescued] = (warmctl.home / "rescued").iterdir()
    assert str(rescued) in message
    # podman, alone, finishes: the container stops, and the export it went on writing is
    # whole: it restores with every value.
    wait_for_state(containers, name, {"exited"})
    assert warmctl("list", "--json").json() == []
    podman("rm", "--force", name)
    podman("container", "restore", "--import", str(rescued), "--name", name)
    assert_all_back(port, items)


@pytest.mark.parametrize("when", ["reading", "restoring"])
def test_ctrl_c_twice_during_a_restore_leaves_at_once_and_says_what_becomes_of_it(
    warmctl: Warmctl, containers: Containers, tmp_path: Path, when: str
) -> None:
    """``reading``: while podman reads the archive, which it cannot finish without warmctl.
    ``restoring``: once it has read it all, when podman (CRIU) goes on alone, or, if it was
    quicker than the second Ctrl-C, has finished."""
    name, port, items = start_memcached(containers, 512, seed=22)
    warmctl("snapshot", name, "big", "--leave-running")
    podman("rm", "--force", "--time", "0", name)
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    run = Running(warmctl, "resume", "big", env={"WARMCTL_DEBUG": "1", "TMPDIR": str(feeds)})
    if when == "reading":
        run.wait_until(lambda: run.said("feed: podman's read 3"), "podman's import read")
    else:
        run.wait_until(lambda: run.said("bytes fed in"), "the whole archive fed")
    run.ctrl_c()
    run.wait_until(lambda: run.said("interrupted: waiting for the restore")
                   or run.proc.poll() is not None, "the first Ctrl-C taken")
    pressed = time.monotonic()
    run.ctrl_c()
    code, stderr = run.finish()
    assert time.monotonic() - pressed < 3
    assert code == 130, stderr
    [message] = error_lines(stderr)
    if when == "restoring" and "left the restore" not in message:
        assert message == (f"warmctl: error: interrupted while podman restored {name}: it "
                           f"finished, and {name} is running")
        assert_all_back(port, items)
        return
    assert message.startswith(
        f"warmctl: error: interrupted twice: warmctl left the restore of {name} unfinished")
    if when == "reading":
        assert "had not read the whole archive" in message
        # podman's read breaks off: it fails, before CRIU, leaving no running container.
        assert f"podman rm {name}" in message
        assert wait_for_state(containers, name, {None, "created", "configured", "exited",
                                                 "stopped"}) != "running"
    else:
        assert "runs once it has finished" in message, message
        wait_for_state(containers, name, {"running"})
        assert_all_back(port, items)


def test_the_time_limit_on_a_checkpoint_is_exit_124_and_podman_finishes_alone(
    warmctl: Warmctl, containers: Containers
) -> None:
    name, port, items = start_memcached(containers, 256, seed=23)
    result = warmctl("snapshot", name, "limited", "--time-limit", "300ms", check=False)
    assert result.returncode == 124, result.stderr
    assert result.stderr.startswith("warmctl: error: the checkpoint of ")
    assert "did not finish within the time limit (300ms)" in result.stderr
    assert warmctl("list", "--json").json() == []
    if "podman had not started it" in result.stderr:
        # warmctl left while it prepared podman's CRIU wrapper: podman never ran, and the
        # container must serve on, untouched.
        assert containers.state(name) == "running"
    else:
        assert "podman container restore" in result.stderr, result.stderr
        # podman was not killed: it stops the container with its memory in podman's storage.
        wait_for_state(containers, name, {"exited"})
        podman("container", "restore", name)
    assert_all_back(port, items)


def test_a_time_limit_of_zero_is_a_usage_error(warmctl: Warmctl) -> None:
    result = warmctl("resume", "any", "--time-limit", "0", check=False)
    assert result.returncode == 2, result.stderr
    assert "--time-limit" in result.stderr


def test_the_time_limit_on_a_restore_is_exit_124_and_leaves_no_running_half(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "quick", "--leave-running")
    target = containers.name("copy")
    result = warmctl("resume", "quick", "--name", target, "--time-limit", "1ms", check=False)
    assert result.returncode == 124, result.stderr
    assert result.stderr.startswith(f"warmctl: error: the restore of {target} did not finish "
                                    "within the time limit (1ms)")
    # Left before podman had the whole archive (or before it started): nothing runs.
    assert ("had not read the whole archive" in result.stderr
            or "podman had not started it" in result.stderr), result.stderr
    assert wait_for_state(containers, target, {None, "created", "configured", "exited",
                                               "stopped"}) != "running"
