"""snapshot, resume, list, show, rm and verify through the real CLI on a real podman."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from mcclient import MemcacheClient, iter_missing_or_different, random_items, wait_for_memcached
from support import IMAGES, Containers, Warmctl, free_port, podman

pytestmark = pytest.mark.podman

MIB = 1 << 20


def start_memcached(containers: Containers, what: str = "mc") -> tuple[str, int]:
    name = containers.name(what)
    port = free_port()
    podman("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:11211",
           IMAGES["memcached"])
    wait_for_memcached(port)
    return name, port


def fill(port: int, mib: int, seed: int) -> dict[str, bytes]:
    items = random_items(count=mib * MIB // 4096, size=4096, seed=seed)
    with MemcacheClient(port) as client:
        client.set_many(items)
    return items


def assert_all_back(port: int, items: dict[str, bytes]) -> None:
    wait_for_memcached(port)
    with MemcacheClient(port) as client:
        got = client.get_many(list(items))
    missing = list(iter_missing_or_different(items, got))
    assert missing == [], f"{len(missing)} of {len(items)} values missing or different"


def start_looper(containers: Containers, what: str = "looper") -> str:
    name = containers.name(what)
    podman("run", "--detach", "--name", name, IMAGES["busybox"], "sh", "-c",
           "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done")
    return name


def last_count(container: str) -> int:
    lines = podman("logs", container).stdout.split()
    return int(lines[-1]) if lines else 0


def test_memcached_snapshot_resume_and_two_more_resumes(
    warmctl: Warmctl, containers: Containers
) -> None:
    name, port = start_memcached(containers)
    items = fill(port, 64, seed=3)

    snap = warmctl("snapshot", name, "mc", "--label", "tier=test")
    assert snap.stdout.strip() == "mc@1"
    assert containers.state(name) == "exited"  # podman's checkpoint stopped it
    podman("rm", "--force", name)

    resumed = warmctl("resume", "mc")
    assert resumed.stdout.strip() == name
    assert containers.state(name) == "running"
    assert_all_back(port, items)

    for what in ("copy1", "copy2"):
        other_port = free_port()
        out = warmctl("resume", "mc@1", "--name", containers.name(what),
                      "--publish", f"127.0.0.1:{other_port}:11211")
        assert out.stdout.strip() == containers.name(what)
        assert_all_back(other_port, items)

    listed = warmctl("list", "--json").json()
    assert isinstance(listed, list) and len(listed) == 1
    entry = listed[0]
    assert entry["ref"] == "mc@1" and entry["generation"] == 1
    assert entry["labels"] == {"tier": "test"}
    assert entry["container"] == name
    assert entry["image"].startswith(IMAGES["memcached"])
    assert entry["size_bytes"] == os.stat(entry["archive"]).st_size
    assert entry["criu_stats"]["pages_written"] >= 64 * MIB // 4096
    assert entry["host"]["criu"]

    shown = warmctl("show", "mc", "--json").json()
    assert isinstance(shown, dict)
    contents = shown["archive_contents"]
    assert contents["memory_bytes"] >= 64 * MIB
    assert contents["process_count"] >= 1
    assert contents["image_name"].startswith(IMAGES["memcached"])

    assert "mc@1" in warmctl("list").stdout
    assert warmctl("verify").returncode == 0


def test_snapshot_then_resume_in_place_continues_the_counter(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    deadline = time.monotonic() + 30
    while last_count(looper) < 5:
        assert time.monotonic() < deadline, "looper never counted to 5"
        time.sleep(0.1)

    warmctl("snapshot", looper, "looper")
    stopped_at = last_count(looper)
    assert containers.state(looper) == "exited"

    assert warmctl("resume", "looper").stdout.strip() == looper
    assert containers.state(looper) == "running"
    deadline = time.monotonic() + 30
    while last_count(looper) <= stopped_at:
        assert time.monotonic() < deadline, "restored looper does not count on"
        time.sleep(0.1)
    counts = [int(x) for x in podman("logs", looper).stdout.split()]
    # The log continues where it stopped: no restart from 1.
    assert counts[stopped_at - 1] == stopped_at and counts[stopped_at] == stopped_at + 1


def test_leave_running_keeps_serving_throughout(warmctl: Warmctl, containers: Containers) -> None:
    name, port = start_memcached(containers)
    items = fill(port, 32, seed=4)
    sample = dict(list(items.items())[:50])
    failures: list[str] = []
    served = 0
    stop = threading.Event()

    def keep_reading() -> None:
        nonlocal served
        with MemcacheClient(port) as client:
            while not stop.is_set():
                got = client.get_many(list(sample))
                if got != sample:
                    failures.append("wrong data")
                served += 1

    reader = threading.Thread(target=keep_reading)
    reader.start()
    try:
        # The reader's connection is established TCP: checkpointing it needs the option.
        warmctl("snapshot", name, "served", "--leave-running", "--tcp-established")
    finally:
        stop.set()
        reader.join(timeout=60)
    assert failures == []
    assert served > 0
    assert containers.state(name) == "running"
    with MemcacheClient(port) as client:
        assert client.get_many(list(sample)) == sample


def test_corrupt_archive_is_refused_by_verify_and_resume(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "lp", "--leave-running")
    entry = warmctl("list", "--json").json()[0]
    archive = Path(entry["archive"])
    with open(archive, "r+b") as f:
        f.seek(archive.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))

    verify = warmctl("verify", check=False)
    assert verify.returncode == 5
    assert "lp@1" in verify.stdout
    resume = warmctl("resume", "lp", "--name", containers.name("new"), check=False)
    assert resume.returncode == 5
    assert "corrupt" in resume.stderr
    assert containers.state(containers.name("new")) is None
    assert len(resume.stderr.strip().splitlines()) == 1


def test_kill_9_midway_leaves_nothing_and_next_snapshot_succeeds(
    warmctl: Warmctl, containers: Containers
) -> None:
    name, port = start_memcached(containers)
    fill(port, 128, seed=5)
    proc = warmctl.popen("snapshot", name, "killed", "--leave-running")
    tmp = warmctl.home / "tmp"
    deadline = time.monotonic() + 60
    while True:
        partial = list(tmp.glob("*.partial")) if tmp.exists() else []
        if partial and partial[0].stat().st_size > 0:
            break
        assert proc.poll() is None, "snapshot finished before it could be killed"
        assert time.monotonic() < deadline, "export never started"
        time.sleep(0.01)
    proc.kill()
    proc.wait()

    assert warmctl("list", "--json").json() == []
    assert list(tmp.iterdir()) == []
    assert list((warmctl.home / "archives").iterdir()) == []
    assert warmctl("snapshot", name, "killed", "--leave-running").stdout.strip() == "killed@1"


def test_four_concurrent_snapshots_get_distinct_generations(
    warmctl: Warmctl, containers: Containers
) -> None:
    first = start_looper(containers, "a")
    second = start_looper(containers, "b")
    procs = [
        warmctl.popen("snapshot", container, snap, "--leave-running")
        for container, snap in [(first, "a"), (second, "b"), (first, "a"), (second, "b")]
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    assert sorted(outputs) == ["a@1", "a@2", "b@1", "b@2"]
    refs = sorted(entry["ref"] for entry in warmctl("list", "--json").json())
    assert refs == ["a@1", "a@2", "b@1", "b@2"]


def test_rm_removes_rows_and_archives(warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    for _ in range(3):
        warmctl("snapshot", looper, "gen", "--leave-running")
    archives = warmctl.home / "archives"
    assert len(list(archives.iterdir())) == 3
    assert warmctl("rm", "gen@2").stdout.split() == ["gen@2"]
    assert [e["ref"] for e in warmctl("list", "--json").json()] == ["gen@1", "gen@3"]
    # Generations are never reused: the next one is 4.
    assert warmctl("snapshot", looper, "gen", "--leave-running").stdout.strip() == "gen@4"
    warmctl("rm", "--all-generations", "gen")
    assert warmctl("list", "--json").json() == []
    assert list(archives.iterdir()) == []


def test_catalogue_is_private(warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    old = os.umask(0)
    try:
        warmctl("snapshot", looper, "private", "--leave-running")
    finally:
        os.umask(old)
    assert warmctl.home.stat().st_mode & 0o777 == 0o700
    for path in (warmctl.home / "archives").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
    assert (warmctl.home / "catalogue.db").stat().st_mode & 0o777 == 0o600


# --- every exit code, provoked through the real CLI -------------------------------------------


def test_exit_1_snapshot_of_a_stopped_container(warmctl: Warmctl, containers: Containers) -> None:
    name = containers.name("stopped")
    podman("create", "--name", name, IMAGES["busybox"], "true")
    result = warmctl("snapshot", name, "x", check=False)
    assert result.returncode == 1
    assert "not running" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["snapshot", "c", "Bad/Name"],
        ["resume", "../etc"],
        ["resume", "name@0"],
        ["snapshot"],
        ["list", "--no-such-option"],
        ["snapshot", "c", "x", "--label", "novalue"],
        ["snapshot", "c", "x", "--compress", "lz4"],
    ],
)
def test_exit_2_usage(warmctl: Warmctl, args: list[str]) -> None:
    result = warmctl(*args, check=False)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_exit_3_not_found(warmctl: Warmctl, containers: Containers) -> None:
    assert warmctl("resume", "nothing", check=False).returncode == 3
    assert warmctl("show", "nothing@4", check=False).returncode == 3
    assert warmctl("rm", "nothing", check=False).returncode == 3
    result = warmctl("snapshot", containers.name("absent"), "x", check=False)
    assert result.returncode == 3
    assert "no such container" in result.stderr


def test_exit_4_name_held_by_another_container(warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "held", "--leave-running")
    # The source is still running under that name: not ours to replace.
    result = warmctl("resume", "held", check=False)
    assert result.returncode == 4
    assert "--replace" in result.stderr
    assert containers.state(looper) == "running"
    # --replace removes it and restores in its place.
    assert warmctl("resume", "held", "--replace").stdout.strip() == looper
    assert containers.state(looper) == "running"


def test_exit_4_port_in_use(warmctl: Warmctl, containers: Containers) -> None:
    name, _port = start_memcached(containers)
    warmctl("snapshot", name, "porty", "--leave-running")
    # Same published port as the still-running source.
    result = warmctl("resume", "porty", "--name", containers.name("second"), check=False)
    assert result.returncode == 4, result.stderr
    assert containers.state(containers.name("second")) is None


def test_exit_6_podman_missing(warmctl: Warmctl) -> None:
    result = warmctl("snapshot", "c", "x", check=False,
                     env={"WARMCTL_PODMAN": "/nonexistent/podman"})
    assert result.returncode == 6
    assert "podman" in result.stderr


def test_exit_7_criu_refuses_an_established_connection(
    warmctl: Warmctl, containers: Containers
) -> None:
    name, port = start_memcached(containers)
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"version\r\n")
        assert client.recv(64).startswith(b"VERSION")
        # Connections are checkpointed by default: the strict option makes CRIU refuse them.
        result = warmctl("snapshot", name, "tcp", "--leave-running", "--no-tcp-established",
                         check=False)
    assert result.returncode == 7, result.stderr
    assert "log:" in result.stderr
    logs = list((warmctl.home / "logs").iterdir())
    assert logs and all(p.stat().st_mode & 0o777 == 0o600 for p in logs)
    assert warmctl("list", "--json").json() == []
    assert containers.state(name) == "running"


def test_exit_8_catalogue_locked(warmctl: Warmctl, containers: Containers) -> None:
    import sqlite3

    looper = start_looper(containers)
    warmctl("snapshot", looper, "busy", "--leave-running")
    db = sqlite3.connect(warmctl.home / "catalogue.db", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        result = warmctl("snapshot", looper, "busy", check=False,
                         env={"WARMCTL_LOCK_TIMEOUT": "1s"})
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert result.returncode == 8, result.stderr
    assert containers.state(looper) == "running"  # nothing was changed
    assert [e["ref"] for e in warmctl("list", "--json").json()] == ["busy@1"]


def test_exit_130_interrupted_verify_leaves_no_temporary_file(
    warmctl: Warmctl, containers: Containers
) -> None:
    import signal

    name, port = start_memcached(containers)
    fill(port, 256, seed=6)
    warmctl("snapshot", name, "big", "--leave-running", "--compress", "none")
    proc = warmctl.popen("verify")
    tmp = warmctl.home / "tmp"
    deadline = time.monotonic() + 60
    while not list(tmp.glob("*.hold")):
        assert proc.poll() is None, "verify finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert list(tmp.iterdir()) == []


def ctrl_c_during_checkpoint(warmctl: Warmctl, *args: str) -> tuple[int, str]:
    """Start a snapshot, and once podman's export is under way, press Ctrl-C: SIGINT to the
    whole foreground process group, as a terminal does."""
    import signal

    proc = warmctl.popen("snapshot", *args)
    tmp = warmctl.home / "tmp"
    deadline = time.monotonic() + 60

    def export_started() -> bool:
        return tmp.exists() and any(p.stat().st_size > 0 for p in tmp.glob("*.plain"))

    while not export_started():
        assert proc.poll() is None, "snapshot finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def test_ctrl_c_during_checkpoint_keeps_the_state_of_a_stopped_container(
    warmctl: Warmctl, containers: Containers
) -> None:
    name, port = start_memcached(containers)
    items = fill(port, 256, seed=9)
    code, err = ctrl_c_during_checkpoint(warmctl, name, "ctrlc")
    assert code == 130, err
    assert "recorded as ctrlc@1" in err
    assert containers.state(name) == "exited"  # podman's checkpoint completed and stopped it
    assert list((warmctl.home / "tmp").iterdir()) == []
    podman("rm", "--force", name)
    warmctl("resume", "ctrlc")
    assert_all_back(port, items)


def test_ctrl_c_during_checkpoint_with_leave_running_records_nothing(
    warmctl: Warmctl, containers: Containers
) -> None:
    name, port = start_memcached(containers)
    fill(port, 256, seed=10)
    code, err = ctrl_c_during_checkpoint(warmctl, name, "ctrlc", "--leave-running")
    assert code == 130, err
    assert "nothing was recorded" in err
    assert containers.state(name) == "running"
    assert warmctl("list", "--json").json() == []
    assert list((warmctl.home / "tmp").iterdir()) == []
