"""SIGTERM and SIGHUP are interrupts like Ctrl-C, and a full catalogue disk loses nothing,
through the real CLI on a real podman and memcached (a few MiB):

- the first signal during a stopping snapshot waits for podman and records the snapshot
  (exit 143/129); during --leave-running, resume and warm it lets podman finish;
- a terminal that hung up (its writes fail with EIO) changes none of that;
- a stopping snapshot whose export meets a full disk brings the container back from the
  checkpoint podman kept in its storage, and says so (exit 10).
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mcclient import wait_for_memcached
from support import IMAGES, Containers, Warmctl, assert_all_back, free_port, podman, start_memcached

pytestmark = pytest.mark.podman

MIB = 1 << 20
SIGNALS = [signal.SIGTERM, signal.SIGHUP]
EXIT: dict[int, int] = {signal.SIGTERM: 143, signal.SIGHUP: 129}
SAID: dict[int, str] = {signal.SIGTERM: "terminated (SIGTERM)", signal.SIGHUP: "hung up (SIGHUP)"}


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 120,
             interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)




def exporting(home: Path) -> bool:
    """podman has begun the checkpoint's export: a temporary file in tmp/ has bytes."""
    try:
        return any(p.stat().st_size > 0 for p in (home / "tmp").iterdir()
                   if p.suffix in (".partial", ".plain"))
    except OSError:
        return False


def signal_when(proc: subprocess.Popen[str], signum: int, ready: Callable[[], bool],
                what: str) -> None:
    wait_for(what, lambda: ready() or proc.poll() is not None)
    assert proc.poll() is None, f"warmctl ended before {what}: {proc.communicate()}"
    os.kill(proc.pid, signum)


def state(name: str) -> tuple[str, bool]:
    out = podman("container", "inspect", "--format", "{{.State.Status}} {{.State.Checkpointed}}",
                 name).stdout.split()
    return out[0], out[1] == "true"


def refs(warmctl: Warmctl) -> list[str]:
    return [e["ref"] for e in warmctl("list", "--json").json()]


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGTERM", "SIGHUP"])
def test_signal_during_a_stopping_snapshot_waits_and_records_it(
        warmctl: Warmctl, containers: Containers, signum: signal.Signals) -> None:
    name, port, items = start_memcached(containers)
    snapshot = warmctl.popen("snapshot", name, "mc")
    signal_when(snapshot, signum, lambda: exporting(warmctl.home), "the export")
    _, stderr = snapshot.communicate(timeout=300)
    assert snapshot.returncode == EXIT[signum], stderr
    assert stderr.startswith(f"warmctl: error: {SAID[signum]} after podman had stopped {name}: "
                             "its state is recorded as mc@1"), stderr
    assert refs(warmctl) == ["mc@1"]
    assert state(name) == ("exited", True)
    warmctl("resume", "mc")
    assert_all_back(port, items)


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGTERM", "SIGHUP"])
def test_signal_during_a_leave_running_snapshot_lets_podman_finish(
        warmctl: Warmctl, containers: Containers, signum: signal.Signals) -> None:
    name, port, items = start_memcached(containers)
    snapshot = warmctl.popen("snapshot", "--leave-running", name, "mc")
    signal_when(snapshot, signum, lambda: exporting(warmctl.home), "the export")
    _, stderr = snapshot.communicate(timeout=300)
    assert snapshot.returncode == EXIT[signum], stderr
    assert stderr.startswith(f"warmctl: error: {SAID[signum]}: podman finished the checkpoint "
                             "and container"), stderr
    assert "kept running; nothing was recorded" in stderr
    assert refs(warmctl) == []
    assert state(name)[0] == "running"
    assert_all_back(port, items)


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGTERM", "SIGHUP"])
def test_signal_during_resume_lets_podman_finish_and_the_container_runs(
        warmctl: Warmctl, containers: Containers, signum: signal.Signals) -> None:
    name, port, items = start_memcached(containers)
    warmctl("snapshot", "--leave-running", name, "mc")
    podman("rm", "--force", "--time", "0", name)
    resume = warmctl.popen("resume", "mc")
    # podman has created the container: the restore is under way.
    signal_when(resume, signum,
                lambda: podman("container", "exists", name, check=False).returncode == 0,
                "the restore")
    _, stderr = resume.communicate(timeout=300)
    assert resume.returncode == EXIT[signum], stderr
    assert stderr.startswith(f"warmctl: error: {SAID[signum]} while podman restored {name}: "
                             f"it finished, and {name} is running"), stderr
    assert state(name)[0] == "running"
    assert_all_back(port, items)


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGTERM", "SIGHUP"])
def test_signal_during_warms_snapshot_records_it(
        warmctl: Warmctl, containers: Containers, signum: signal.Signals) -> None:
    name, port = containers.name("warm"), free_port()
    warm = warmctl.popen("warm", IMAGES["memcached"], "warmed", "--container", name,
                         "--publish", f"127.0.0.1:{port}:11211", "--ready-tcp", str(port))
    signal_when(warm, signum, lambda: exporting(warmctl.home), "the export")
    _, stderr = warm.communicate(timeout=300)
    assert warm.returncode == EXIT[signum], stderr
    assert stderr.startswith(f"warmctl: error: {SAID[signum]} after podman had stopped {name}: "
                             "its state is recorded as warmed@1"), stderr
    assert refs(warmctl) == ["warmed@1"]
    warmctl("resume", "warmed")
    wait_for_memcached(port)


@pytest.fixture
def hung_up_terminal() -> Iterator[tuple[int, Callable[[], None]]]:
    """A terminal for warmctl's stderr (so that it draws its live progress line), and a way
    to hang it up: once its master side is closed, every write to it fails with EIO."""
    master, slave = pty.openpty()
    closed = False

    def hang_up() -> None:
        nonlocal closed
        os.close(master)
        closed = True

    try:
        yield slave, hang_up
    finally:
        os.close(slave)
        if not closed:
            os.close(master)


def test_sighup_from_a_terminal_that_hung_up_still_records_the_snapshot(
        warmctl: Warmctl, containers: Containers,
        hung_up_terminal: tuple[int, Callable[[], None]]) -> None:
    terminal, hang_up = hung_up_terminal
    name, port, items = start_memcached(containers)
    snapshot = subprocess.Popen(
        [sys.executable, "-m", "warmctl", "snapshot", name, "mc"], stdout=subprocess.PIPE,
        stderr=terminal, stdin=subprocess.DEVNULL, text=True,
        env={**warmctl.env, "TERM": "xterm"}, process_group=0)
    wait_for("the export", lambda: exporting(warmctl.home) or snapshot.poll() is not None)
    hang_up()
    os.killpg(snapshot.pid, signal.SIGHUP)  # what the kernel sends a terminal's job
    snapshot.communicate(timeout=300)
    assert snapshot.returncode == 129
    assert refs(warmctl) == ["mc@1"]
    assert state(name) == ("exited", True)
    warmctl("resume", "mc")
    assert_all_back(port, items)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 400 KiB tmpfs: room for a catalogue, not for a checkpoint."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k,mode=0700", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_a_full_disk_during_a_stopping_snapshot_brings_the_container_back_and_says_so(
        containers: Containers, small_disk: Path, compress: str) -> None:
    warmctl = Warmctl(small_disk / "home")
    name, port, items = start_memcached(containers)
    result = warmctl("snapshot", name, "mc", "--compress", compress, check=False)
    assert result.returncode == 10, result.stderr
    assert "no space left on device" in result.stderr
    assert (f"podman had already stopped {name}: warmctl restored it from the checkpoint "
            "podman keeps in its storage, and it runs on as before; nothing was recorded"
            in result.stderr)
    assert state(name)[0] == "running"
    assert_all_back(port, items)
    assert refs(warmctl) == []


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant, whatever their session (podman runs in its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def criu_dumping(root: int) -> bool:
    """CRIU (runc's `criu swrk`) runs under warmctl: the checkpoint is being dumped."""
    for pid in process_tree(root):
        try:
            words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"swrk" in words and any(word.endswith(b"criu") for word in words):
            return True
    return False


def test_sigterm_to_the_whole_process_tree_while_criu_dumps_loses_nothing(
        warmctl: Warmctl, containers: Containers) -> None:
    # systemd's stop signals every process of the unit's cgroup: warmctl, podman, runc and
    # CRIU. CRIU then gives up and the container runs on, while podman 4.3 reports success
    # with an empty export: that must neither pass for a rescued memory nor lose anything.
    name, port, items = start_memcached(containers)
    snapshot = warmctl.popen("snapshot", name, "mc")
    wait_for("CRIU", lambda: criu_dumping(snapshot.pid) or snapshot.poll() is not None,
             interval=0.002)
    for pid in process_tree(snapshot.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _, stderr = snapshot.communicate(timeout=300)
    assert snapshot.returncode == 143, stderr
    assert stderr.startswith("warmctl: error: terminated (SIGTERM)"), stderr
    if refs(warmctl) == ["mc@1"]:  # CRIU had finished: recorded, as after warmctl's signal
        assert state(name) == ("exited", True)
        warmctl("resume", "mc")
    else:
        assert refs(warmctl) == []
        assert state(name)[0] == "running", stderr
        assert "runs on: nothing was lost" in stderr
        assert not list((warmctl.home / "rescued").glob("*")), "an empty export was 'rescued'"
    assert_all_back(port, items)


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGTERM", "SIGHUP"])
def test_signal_while_warm_waits_for_readiness_removes_its_container(
        warmctl: Warmctl, containers: Containers, tmp_path: Path, signum: int) -> None:
    name, probed = containers.name("warm"), tmp_path / "probed"
    warm = warmctl.popen("warm", IMAGES["memcached"], "warmed", "--container", name,
                         "--ready", f"touch {probed}; false")
    signal_when(warm, signum, probed.exists, "the first readiness probe")
    _, stderr = warm.communicate(timeout=300)
    assert warm.returncode == EXIT[signum], stderr
    assert stderr == f"warmctl: error: {SAID[signum]}\n"
    assert containers.state(name) is None
    assert refs(warmctl) == []
