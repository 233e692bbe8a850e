"""Named volumes: captured at the memory's instant, and clones with volumes of their own.

The counter appends 1, 2, 3, ... to /data/log on a named volume as fast as it can. Memory (the
shell's variable) and file agree only when both come from the same instant: after a resume the
file must read 1..N without a gap or a repeat. A volume captured later than the memory (what
podman does with --leave-running) shows up as a repeat: the restored process counts on from a
smaller number than the file already holds.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import IMAGES, Containers, Warmctl, free_port, podman

pytestmark = pytest.mark.podman

COUNTER = 'i=0; while true; do i=$((i+1)); echo $i >> /data/log; done'
# Redis with its append-only file on /data, and a writer beside it that appends 1, 2, 3, ...
# to the list "seq" (through a Unix socket inside the container, so no TCP connection is open
# at the checkpoint); a restarted writer counts on from the list's length.
REDIS = ("redis-server --appendonly yes --dir /data --unixsocket /tmp/redis.sock "
         "--protected-mode no & "
         "until redis-cli -s /tmp/redis.sock ping >/dev/null 2>&1; do sleep 0.05; done; "
         "i=$(redis-cli -s /tmp/redis.sock LLEN seq); "
         "while :; do i=$((i+1)); "
         "redis-cli -s /tmp/redis.sock RPUSH seq $i >/dev/null || exit 1; done")


@pytest.fixture
def volumes(containers: Containers) -> Iterator[Callable[[str], str]]:
    """Volume names for this test (the containers' prefix); all removed afterwards, clones'
    included (after the containers, which the containers fixture removes first)."""
    def name(what: str) -> str:
        return containers.name(what)

    yield name
    containers.cleanup()
    listed = podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split()
    ours = [v for v in listed if v.startswith(containers.prefix)]
    if ours:
        podman("volume", "rm", "--force", *ours, check=False)


def mountpoint(volume: str) -> Path:
    return Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())


def counts(volume: str) -> list[int]:
    text = (mountpoint(volume) / "log").read_text()
    # The last line may be half written while the counter runs.
    return [int(line) for line in text.split("\n")[:-1] if line]


def problems(numbers: list[int]) -> list[tuple[int, int]]:
    """Neighbouring lines that are not n, n+1 (a gap or a repeat), and a start other than 1."""
    found = [(a, b) for a, b in itertools.pairwise(numbers) if b != a + 1]
    if numbers and numbers[0] != 1:
        found.insert(0, (0, numbers[0]))
    return found


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60,
             interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def start_counter(name: str, volume: str) -> None:
    podman("run", "-d", "--name", name, "-v", f"{volume}:/data", IMAGES["busybox"],
           "sh", "-c", COUNTER)
    wait_for("the counter to write", lambda: len(counts(volume)) > 1000)


def counted_on(volume: str, beyond: int) -> list[int]:
    """The file once the (restored) counter has written well past ``beyond`` lines."""
    wait_for(f"{volume} to grow past {beyond} lines", lambda: len(counts(volume)) > beyond + 2000)
    return counts(volume)


@pytest.mark.parametrize("leave_running", [True, False], ids=["leave-running", "stopping"])
def test_resumed_counter_continues_its_file_without_gap_or_repeat(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str],
        leave_running: bool) -> None:
    source, data = containers.name("counter"), volumes("data")
    start_counter(source, data)
    blob = os.urandom(3 << 20)  # incompressible: the archive's size must show it
    (mountpoint(data) / "blob").write_bytes(blob)
    warmctl("snapshot", *(["--leave-running"] if leave_running else []), source, "counter")
    shown = warmctl("show", "--json", "counter").json()
    [archived] = shown["archive_contents"]["volumes"]
    assert archived["name"] == data and archived["destination"] == "/data"
    assert archived["bytes"] > len(blob)
    [listed] = warmctl("list", "--json").json()
    assert listed["size_bytes"] > len(blob)
    captured = "frozen" if leave_running else "stopped"
    shown_lines = [line.split() for line in warmctl("show", "counter").stdout.splitlines()]
    assert ["volumes.capture", captured] in shown_lines
    # The file as the snapshot took it, then the source and its volume are gone.
    podman("rm", "--force", "--time", "0", source)
    at_snapshot = len(counts(data))
    podman("volume", "rm", data)

    assert warmctl("resume", "counter").stdout.strip() == source
    numbers = counted_on(data, at_snapshot)
    assert problems(numbers) == []
    assert (mountpoint(data) / "blob").read_bytes() == blob


def test_resume_in_place_refuses_an_existing_volume_until_told_what_to_do(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str]) -> None:
    source, data = containers.name("counter"), volumes("data")
    start_counter(source, data)
    warmctl("snapshot", "--leave-running", source, "counter")
    podman("rm", "--force", "--time", "0", source)
    written = len(counts(data))

    refused = warmctl("resume", "counter", check=False)
    assert refused.returncode == 4, refused.stderr
    assert f"volume {data} already exists" in refused.stderr
    assert "--volumes snapshot" in refused.stderr and "--volumes shared" in refused.stderr
    assert containers.state(source) is None
    assert len(counts(data)) == written  # the volume was not touched

    resumed = warmctl("resume", "counter", "--volumes", "snapshot", "--json").json()
    assert resumed["volumes"] == [{"snapshot_volume": data, "volume": data,
                                   "destination": "/data", "content": "snapshot"}]
    # The snapshot's content replaced the file, which ran further than the snapshot.
    numbers = counted_on(data, 0)
    assert problems(numbers) == []


def test_two_clones_get_volumes_of_their_own_beside_the_running_source(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str]) -> None:
    source, data = containers.name("counter"), volumes("data")
    start_counter(source, data)
    warmctl("snapshot", "--leave-running", source, "counter")
    clones = [containers.name("clone1"), containers.name("clone2")]

    first = warmctl("resume", "counter", "--name", clones[0])
    assert first.stdout.strip() == clones[0]
    assert f"volume {clones[0]}-{data} at /data" in first.stderr
    second = warmctl("resume", "counter", "--name", clones[1], "--json").json()
    assert second["volumes"] == [{"snapshot_volume": data, "volume": f"{clones[1]}-{data}",
                                  "destination": "/data", "content": "snapshot"}]

    for clone in clones:
        own = f"{clone}-{data}"
        mounted = podman("container", "inspect", "--format",
                         "{{range .Mounts}}{{.Name}} {{end}}", clone).stdout.split()
        assert mounted == [own]
        assert problems(counted_on(own, 0)) == []
    # The source ran on beside them, alone on its volume: a clone writing there would have
    # put a second sequence into its file.
    assert containers.state(source) == "running"
    assert problems(counts(data)) == []

    again = warmctl("resume", "counter", "--name", clones[0], check=False)
    assert again.returncode == 4  # the container name and its volume are taken
    # --replace replaces the clone and its volume, filled anew from the snapshot.
    (mountpoint(f"{clones[0]}-{data}") / "marker").write_text("the replaced clone's")
    warmctl("resume", "counter", "--name", clones[0], "--replace")
    assert not (mountpoint(f"{clones[0]}-{data}") / "marker").exists()
    assert problems(counted_on(f"{clones[0]}-{data}", 0)) == []


class Redis:
    """Just enough of RESP to set and read keys over TCP."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def call(self, *args: str) -> object:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> object:
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest.decode()
        if kind == b"-":
            raise AssertionError(f"redis error: {rest.decode()}")
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise AssertionError(f"unexpected reply {line!r}")


def connect_redis(port: int) -> Redis:
    deadline = time.monotonic() + 60
    while True:
        try:
            client = Redis(port)
            client.call("PING")
            return client
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def sequence(client: Redis) -> list[int]:
    values = client.call("LRANGE", "seq", "0", "-1")
    assert isinstance(values, list)
    return [int(str(v)) for v in values]


def test_redis_clone_has_every_acknowledged_key_and_loads_its_aof(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str]) -> None:
    source, data = containers.name("redis"), volumes("redisdata")
    port, clone_port = free_port(), free_port()
    podman("run", "-d", "--name", source, "-v", f"{data}:/data", "-p", f"127.0.0.1:{port}:6379",
           "--entrypoint", "/bin/sh", IMAGES["redis"], "-c", REDIS)
    client = connect_redis(port)
    acknowledged = [f"key{i}" for i in range(500)]
    for key in acknowledged:
        assert client.call("SET", key, key.upper()) == "OK"
    wait_for("the writer", lambda: len(sequence(client)) > 50)
    client.close()
    # No TCP connection at the checkpoint (the writer inside uses a Unix socket): wait until
    # Redis has seen this one close.
    wait_for("Redis to drop the TCP client", lambda: tcp_clients(source) == 0)

    warmctl("snapshot", "--leave-running", source, "redis")
    clone = containers.name("clone")
    warmctl("resume", "redis", "--name", clone, "--publish", f"127.0.0.1:{clone_port}:6379")

    copy = connect_redis(clone_port)
    assert copy.call("MGET", *acknowledged) == [k.upper() for k in acknowledged]
    before = len(sequence(copy))
    wait_for("the clone's writer", lambda: len(sequence(copy)) > before + 50)
    assert problems(sequence(copy)) == []
    copy.close()

    # A fresh Redis on the clone's volume loads what the snapshot's AOF and the clone's own
    # writes left: the same data, the sequence still without a gap or a repeat. SHUTDOWN
    # writes the AOF out; the writer then fails and the container exits.
    seen = len(logs(clone).splitlines())
    # (redis-cli exits non-zero: the server closes the connection instead of answering)
    podman("exec", clone, "redis-cli", "-s", "/tmp/redis.sock", "shutdown", check=False)
    wait_for("the clone to stop", lambda: containers.state(clone) == "exited")
    podman("start", clone)
    wait_for("the clone to load its AOF", lambda: "Ready to accept" in logs(clone, seen))
    loaded = logs(clone, seen)
    assert "DB loaded from append only file" in loaded
    for complaint in ("Bad file format", "Unexpected end of file", "truncated", "not valid"):
        assert complaint not in loaded
    restarted = connect_redis(clone_port)
    assert restarted.call("MGET", *acknowledged) == [k.upper() for k in acknowledged]
    assert problems(sequence(restarted)) == []
    restarted.close()
    # The source's volume was never the clone's.
    assert podman("container", "inspect", "--format", "{{range .Mounts}}{{.Name}}{{end}}",
                  clone).stdout.strip() == f"{clone}-{data}"


def tcp_clients(container: str) -> int:
    listed = podman("exec", container, "redis-cli", "-s", "/tmp/redis.sock", "client", "list")
    return sum("addr=/" not in line for line in listed.stdout.splitlines() if "addr=" in line)


def logs(container: str, skip: int = 0) -> str:
    """The container's output (stdout and stderr), without its first ``skip`` lines."""
    result = podman("logs", container)
    return "\n".join((result.stdout + result.stderr).splitlines()[skip:])


def test_show_and_snapshot_name_bind_mounts_as_not_in_the_archive(
        warmctl: Warmctl, containers: Containers, tmp_path: Path) -> None:
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    name = containers.name("bound")
    podman("run", "-d", "--name", name, "-v", f"{host_dir}:/shared", IMAGES["busybox"],
           "sleep", "3600")
    taken = warmctl("snapshot", "--leave-running", name, "bound")
    assert f"bind mount {host_dir} -> /shared is a host path" in taken.stderr
    shown = warmctl("show", "bound")
    assert f"{host_dir} (host path: not in the archive)" in shown.stdout
    contents = warmctl("show", "--json", "bound").json()["archive_contents"]
    assert contents["bind_mounts"] == [{"source": str(host_dir), "destination": "/shared"}]
    assert contents["volumes"] == []


def freezer_file(container: str) -> Path:
    """The container's cgroup v1 freezer.state: read directly, so that polling it is cheap
    enough to see a freeze of a fraction of a second."""
    pid = podman("container", "inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "freezer" in controllers.split(","):
            return Path("/sys/fs/cgroup/freezer") / path.lstrip("/") / "freezer.state"
    raise AssertionError("no cgroup v1 freezer on this host")


def freezer_state(container: str) -> str:
    return freezer_file(container).read_text().strip()


def test_a_killed_snapshot_never_leaves_the_container_frozen(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str]) -> None:
    source, data = containers.name("counter"), volumes("data")
    start_counter(source, data)
    (mountpoint(data) / "ballast").write_bytes(os.urandom(256 << 20))  # a longer freeze
    freezer = freezer_file(source)
    snapshot = warmctl.popen("snapshot", "--leave-running", source, "counter")
    try:
        wait_for("the freeze", lambda: freezer.read_text().strip() == "FROZEN"
                 or snapshot.poll() is not None, timeout=120, interval=0.002)
    finally:
        snapshot.kill()  # as kill -9: no finally runs in warmctl
        _, stderr = snapshot.communicate()
    assert snapshot.returncode == -signal.SIGKILL, \
        f"the snapshot ended (exit {snapshot.returncode}) before the freeze was seen: {stderr}"
    wait_for("the guard to thaw the container", lambda: freezer_state(source) == "THAWED")
    counted = len(counts(data))
    wait_for("the counter to go on", lambda: len(counts(data)) > counted + 1000)


# --- a failed resume never costs a volume -----------------------------------------------------

PRECIOUS = "precious-v3"  # what the volume holds after the snapshot: newer than the snapshot's


def volume_newer_than_its_snapshot(warmctl: Warmctl, containers: Containers,
                                   volumes: Callable[[str], str]) -> tuple[str, str, bytes]:
    """A busybox on a labelled volume, snapshotted as "keeper" (a stopping snapshot), then
    removed; its volume then gets newer content than the snapshot's: f = PRECIOUS, beside
    2 MiB of ballast (so that podman takes a moment to unpack the snapshot's). Returns the
    source container's name, the volume's, and the ballast."""
    source, data = containers.name("keeper"), volumes("data")
    podman("volume", "create", "--label", "keep=me", data)
    podman("run", "-d", "--name", source, "-v", f"{data}:/data", IMAGES["busybox"],
           "sh", "-c", "echo at-the-snapshot > /data/f; while true; do sleep 1; done")
    wait_for("the container to write", lambda: (mountpoint(data) / "f").exists())
    ballast = os.urandom(2 << 20)
    (mountpoint(data) / "ballast").write_bytes(ballast)
    warmctl("snapshot", source, "keeper")
    podman("rm", "--force", "--time", "0", source)
    (mountpoint(data) / "f").write_text(PRECIOUS)
    return source, data, ballast


def assert_as_it_was(data: str, ballast: bytes) -> None:
    assert (mountpoint(data) / "f").read_text() == PRECIOUS
    assert (mountpoint(data) / "ballast").read_bytes() == ballast
    labels = podman("volume", "inspect", "--format", "{{json .Labels}}", data).stdout
    assert json.loads(labels) == {"keep": "me"}


def saved_copies(warmctl: Warmctl) -> list[Path]:
    directory = warmctl.home / "saved-volumes"
    return sorted(directory.glob("*.tar")) if directory.is_dir() else []


@contextlib.contextmanager
def port_taken() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket: podman's restore cannot publish it
    (rootful podman binds the ports it publishes), so it fails after it made the volumes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def volume_replaced(data: str) -> Callable[[], bool]:
    """Whether the volume has been removed since now (its directory gone or made anew)."""
    directory = mountpoint(data).parent
    before = directory.stat().st_ino

    def replaced() -> bool:
        try:
            return directory.stat().st_ino != before
        except FileNotFoundError:
            return True
    return replaced


def test_a_damaged_archive_leaves_the_volume_as_it_was(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str]) -> None:
    _, data, ballast = volume_newer_than_its_snapshot(warmctl, containers, volumes)
    [archive] = (warmctl.home / "archives").iterdir()
    damaged = bytearray(archive.read_bytes())
    for offset in range(len(damaged) - 4096, len(damaged) - 4000):  # as a bad disk does
        damaged[offset] ^= 0xFF
    archive.write_bytes(bytes(damaged))

    for name in ((), ("--name", containers.name("other"))):
        failed = warmctl("resume", "keeper", "--volumes", "snapshot", *name, check=False)
        assert failed.returncode == 5, failed.stderr
        assert_as_it_was(data, ballast)
        assert f"volume {data} is as it was" in failed.stderr
    assert saved_copies(warmctl) == []


def test_a_failed_restore_puts_the_volume_back_as_it_was(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str]) -> None:
    source, data, ballast = volume_newer_than_its_snapshot(warmctl, containers, volumes)
    with port_taken() as port:
        failed = warmctl("resume", "keeper", "--volumes", "snapshot",
                         "--publish", f"127.0.0.1:{port}:80", check=False)
    assert failed.returncode == 4, failed.stderr
    assert_as_it_was(data, ballast)
    assert "address already in use" in failed.stderr
    assert f"volume {data} is as it was (put back from its copy)" in failed.stderr
    assert containers.state(source) is None
    assert saved_copies(warmctl) == []
    # And with nothing in the way, the same resume replaces the content with the snapshot's.
    warmctl("resume", "keeper", "--volumes", "snapshot")
    assert (mountpoint(data) / "f").read_text() == "at-the-snapshot\n"
    assert saved_copies(warmctl) == []


def test_a_failed_replace_of_a_clone_puts_the_clones_volume_back(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str]) -> None:
    _, data, _ = volume_newer_than_its_snapshot(warmctl, containers, volumes)
    clone = containers.name("clone")
    warmctl("resume", "keeper", "--name", clone)
    own = f"{clone}-{data}"
    (mountpoint(own) / "f").write_text("the clone's own, newer")
    with port_taken() as port:
        failed = warmctl("resume", "keeper", "--name", clone, "--replace",
                         "--publish", f"127.0.0.1:{port}:80", check=False)
    assert failed.returncode == 4, failed.stderr
    assert (mountpoint(own) / "f").read_text() == "the clone's own, newer"
    assert f"volume {own} is as it was (put back from its copy)" in failed.stderr
    assert saved_copies(warmctl) == []
    assert (mountpoint(data) / "f").read_text() == PRECIOUS  # the source's: never touched


def test_a_volume_that_cannot_be_saved_is_not_removed(
        containers: Containers, volumes: Callable[[str], str], tmp_path: Path) -> None:
    """The catalogue on a small tmpfs: the archive fits, the volume's copy does not. Resume
    must fail before it removes anything (exit 10: the disk is full)."""
    home = tmp_path / "small"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(home)],
                   check=True)
    try:
        warmctl = Warmctl(home)
        source, data = containers.name("keeper"), volumes("data")
        podman("run", "-d", "--name", source, "-v", f"{data}:/data", IMAGES["busybox"],
               "sh", "-c", "echo at-the-snapshot > /data/f; while true; do sleep 1; done")
        wait_for("the container to write", lambda: (mountpoint(data) / "f").exists())
        ballast = os.urandom(2 << 20)
        (mountpoint(data) / "ballast").write_bytes(ballast)
        warmctl("snapshot", "--compress", "none", source, "keeper")
        podman("rm", "--force", "--time", "0", source)
        (mountpoint(data) / "f").write_text(PRECIOUS)

        failed = warmctl("resume", "keeper", "--volumes", "snapshot", check=False)
        assert failed.returncode == 10, failed.stderr
        assert (mountpoint(data) / "f").read_text() == PRECIOUS
        assert (mountpoint(data) / "ballast").read_bytes() == ballast
        assert f"cannot save volume {data}'s content before replacing it" in failed.stderr
        assert f"volume {data} is as it was (nothing was removed)" in failed.stderr
        assert saved_copies(warmctl) == [] and not list((home / "saved-volumes").iterdir())
    finally:
        subprocess.run(["umount", str(home)], check=False)


def restoring(target: str) -> bool:
    """Whether a `podman container restore ... --name target` runs."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if b"restore" in argv and target.encode() in argv:
                return True
    return False


def test_a_criu_failure_puts_the_volume_back_as_it_was(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str],
        tmp_path: Path) -> None:
    """CRIU itself fails the restore, after podman made the volume from the snapshot: the
    `criu` first on PATH runs the real one with one more line in its configuration file, an
    action script that fails CRIU's pre-restore step (and lets every other step pass)."""
    source, data, ballast = volume_newer_than_its_snapshot(warmctl, containers, volumes)
    real = shutil.which("criu", path=warmctl.env["PATH"])
    assert real is not None
    broken = tmp_path / "broken-criu"
    broken.mkdir()
    script = broken / "fail-pre-restore"
    script.write_text('#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = pre-restore ] && exit 1\n'
                      "exit 0\n")
    script.chmod(0o755)
    config = broken / "criu.conf"
    (broken / "criu").write_text(
        "#!/bin/sh\n"
        f'{{ [ -n "$CRIU_CONFIG_FILE" ] && cat "$CRIU_CONFIG_FILE"; '
        f"echo 'action-script {script}'; }} > {config}\n"
        f'CRIU_CONFIG_FILE={config} exec {real} "$@"\n')
    (broken / "criu").chmod(0o755)
    failed = warmctl("resume", "keeper", "--volumes", "snapshot", check=False,
                     env={"PATH": f"{broken}{os.pathsep}{warmctl.env['PATH']}"})
    assert failed.returncode == 7, failed.stderr
    assert_as_it_was(data, ballast)
    # The runtime's words that CRIU ended the restore: runc's "criu failed", crun's
    # "CRIU restoring failed".
    assert re.search(r"criu (restoring )?failed", failed.stderr, re.IGNORECASE), failed.stderr
    assert f"volume {data} is as it was (put back from its copy)" in failed.stderr
    assert containers.state(source) is None
    assert saved_copies(warmctl) == []


@pytest.mark.parametrize("moment", ["volume-removed", "podman-restoring"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_resume_puts_the_volume_back_as_it_was(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str],
        signum: signal.Signals, moment: str) -> None:
    """The interrupt comes once the volume was removed, or once podman restores (it lets
    podman finish); podman's restore then fails (its port is taken): the volume must come
    back, whichever step the interrupt met."""
    source, data, ballast = volume_newer_than_its_snapshot(warmctl, containers, volumes)
    replaced = volume_replaced(data)
    with port_taken() as port:
        resume = warmctl.popen("resume", "keeper", "--volumes", "snapshot",
                               "--publish", f"127.0.0.1:{port}:80")
        try:
            if moment == "volume-removed":
                wait_for("the volume's removal", lambda: replaced() or resume.poll() is not None,
                         interval=0.001)
            else:
                wait_for("podman's restore", lambda: restoring(source)
                         or resume.poll() is not None, interval=0.001)
            if signum == signal.SIGINT:
                os.killpg(resume.pid, signal.SIGINT)  # as a terminal's Ctrl-C
            else:
                resume.send_signal(signum)  # as kill or systemd's stop
            _, stderr = resume.communicate(timeout=300)
        finally:
            if resume.poll() is None:
                resume.kill()
    assert resume.returncode == 128 + signum, stderr
    assert_as_it_was(data, ballast)
    assert ("interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)") in stderr
    assert f"volume {data} is as it was (put back from its copy)" in stderr
    assert containers.state(source) is None
    assert saved_copies(warmctl) == []


def test_a_killed_resume_leaves_the_volumes_content_where_the_next_resume_finds_it(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str],
        tmp_path: Path) -> None:
    source, data, ballast = volume_newer_than_its_snapshot(warmctl, containers, volumes)
    replaced = volume_replaced(data)
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    warmctl.env["TMPDIR"] = str(feeds)
    with port_taken() as port:
        resume = warmctl.popen("resume", "keeper", "--volumes", "snapshot",
                               "--publish", f"127.0.0.1:{port}:80")
        try:
            wait_for("the volume's removal", lambda: replaced() or resume.poll() is not None,
                     interval=0.001)
        finally:
            resume.kill()  # as kill -9: nothing of warmctl's runs after it
            resume.communicate()
        assert resume.returncode == -signal.SIGKILL
        podman_alone_is_done(feeds, source)

    [copy] = saved_copies(warmctl)
    assert copy.stat().st_mode & 0o777 == 0o600
    with tarfile.open(copy) as saved:
        assert saved.extractfile("f").read().decode() == PRECIOUS  # type: ignore[union-attr]

    # The next resume says where it is: it puts it back itself when the volume is missing
    # (warmctl was killed before podman's restore began), else it names the command.
    containers.cleanup()  # what podman's failed restore may have left under the name
    after = warmctl("resume", "keeper", check=False)
    assert after.returncode == 4, after.stderr  # the volume exists (either way): refused
    if f"volume {data} was missing: put back from {copy}" in after.stderr:
        assert not copy.exists()
    else:
        assert f"{copy} holds volume {data}'s content" in after.stderr, after.stderr
        assert f"podman volume import {data} {copy}" in after.stderr
        podman("volume", "import", data, str(copy))
    assert (mountpoint(data) / "f").read_text() == PRECIOUS
    assert (mountpoint(data) / "ballast").read_bytes() == ballast


def podman_alone_is_done(feeds: Path, target: str) -> None:
    """If warmctl had started podman's restore before it was killed, podman goes on alone:
    unblock a read of the feed's FIFO that has no writer any more (podman then fails, as
    its port is taken), and wait until no podman restores ``target``."""
    def still_restoring() -> bool:
        for fifo in feeds.glob("*/archive.tar"):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a reader gets EOF
        return restoring(target)

    wait_for("podman's restore to end", lambda: not still_restoring(), timeout=120,
             interval=0.1)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def freezer_guard_of(warmctl_pid: int, freezer: Path) -> int:
    """The guard process of warmctl's freeze: the child that was handed the freezer's file."""
    for child in children_of(warmctl_pid):
        with contextlib.suppress(OSError):
            if str(freezer).encode() in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    raise AssertionError("warmctl has no freezer guard while the container is frozen")


def test_sigterm_to_warmctl_and_its_guard_then_sigkill_never_leaves_the_container_frozen(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str]) -> None:
    # What systemd's stop does to a unit's whole cgroup: SIGTERM to every process, warmctl
    # and its freezer guard alike; then (the stop timeout passing) SIGKILL. The guard must
    # outlive the SIGTERM to thaw the container once warmctl is killed.
    source, data = containers.name("counter"), volumes("data")
    start_counter(source, data)
    (mountpoint(data) / "ballast").write_bytes(os.urandom(256 << 20))  # a longer freeze
    freezer = freezer_file(source)
    snapshot = warmctl.popen("snapshot", "--leave-running", source, "counter")
    try:
        wait_for("the freeze", lambda: freezer.read_text().strip() == "FROZEN"
                 or snapshot.poll() is not None, timeout=120, interval=0.002)
        # Held where it is (a loaded machine must not let the thaw come first), warmctl
        # then gets its SIGTERM with the guard, and SIGKILL while the container is frozen.
        os.kill(snapshot.pid, signal.SIGSTOP)
        assert freezer.read_text().strip() == "FROZEN", "the freeze ended before the signals"
        guard = freezer_guard_of(snapshot.pid, freezer)
        os.kill(snapshot.pid, signal.SIGTERM)
        os.kill(guard, signal.SIGTERM)
    finally:
        snapshot.kill()  # as kill -9: no finally runs in warmctl
        _, stderr = snapshot.communicate()
    assert snapshot.returncode == -signal.SIGKILL, \
        f"the snapshot ended (exit {snapshot.returncode}) before it was killed: {stderr}"
    wait_for("the guard to thaw the container", lambda: freezer_state(source) == "THAWED")
    counted = len(counts(data))
    wait_for("the counter to go on", lambda: len(counts(data)) > counted + 1000)


@contextlib.contextmanager
def unit_cgroup() -> Iterator[list[Path]]:
    """A cgroup of its own in the hierarchies systemd tracks a unit's processes by (the
    named v1 one and v2's), as a unit gets: yields their cgroup.procs files. Removed after."""
    made = []
    for root in (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"),
                 Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").is_file():
            group = root / f"warmctl-test-{os.getpid()}"
            group.mkdir()
            made.append(group)
    assert made, "no cgroup hierarchy systemd could track a unit by"
    try:
        yield [group / "cgroup.procs" for group in made]
    finally:
        for group in made:
            wait_for(f"{group} to empty", functools.partial(cgroup_is_empty, group))
            group.rmdir()


def cgroup_is_empty(group: Path) -> bool:
    return not (group / "cgroup.procs").read_text().split()


def signal_cgroup(procs_files: list[Path], signum: int) -> None:
    """What systemd does to a unit's cgroup on stop: the signal to every process in it."""
    for procs in procs_files:
        for pid in procs.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signum)


def test_a_units_stop_timeout_during_the_freeze_never_leaves_the_container_frozen(
        warmctl: Warmctl, containers: Containers, volumes: Callable[[str], str]) -> None:
    # systemd's stop: SIGTERM to every process of the unit's cgroup (warmctl, its guard,
    # podman, runc, CRIU), and when the stop timeout passes, SIGKILL to all. The guard must
    # be out of reach of both to thaw the container.
    source, data = containers.name("counter"), volumes("data")
    start_counter(source, data)
    (mountpoint(data) / "ballast").write_bytes(os.urandom(256 << 20))  # a longer freeze
    freezer = freezer_file(source)
    with unit_cgroup() as unit:
        def join_unit() -> None:
            for procs in unit:
                procs.write_text("0")

        snapshot = subprocess.Popen(
            [sys.executable, "-m", "warmctl", "snapshot", "--leave-running", source, "counter"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=warmctl.env,
            stdin=subprocess.DEVNULL, preexec_fn=join_unit)
        try:
            wait_for("the freeze", lambda: freezer.read_text().strip() == "FROZEN"
                     or snapshot.poll() is not None, timeout=120, interval=0.002)
            os.kill(snapshot.pid, signal.SIGSTOP)  # held there: the thaw cannot come first
            assert freezer.read_text().strip() == "FROZEN", "the freeze ended before the stop"
            freezer_guard_of(snapshot.pid, freezer)
            signal_cgroup(unit, signal.SIGTERM)
            signal_cgroup(unit, signal.SIGKILL)  # the stop timeout passed
        finally:
            snapshot.kill()
            _, stderr = snapshot.communicate()
        assert snapshot.returncode == -signal.SIGKILL, stderr
        wait_for("the guard to thaw the container", lambda: freezer_state(source) == "THAWED")
    counted = len(counts(data))
    wait_for("the counter to go on", lambda: len(counts(data)) > counted + 1000)
