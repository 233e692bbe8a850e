"""Snapshot under load: what a serving memcached's clients see while it is checkpointed with
--leave-running, warmctl against podman's own checkpoint.

Clients (bounded: a fixed number of threads, 127.0.0.1 only, stopped after each command):
persistent connections doing set then get, each checking its answer, and one thread opening a
new connection per request. For each command: its exit status and seconds, the clients' error
count, and the latency of every request answered while it ran (p50, p99, max). podman's own
command is `container checkpoint --leave-running --tcp-established --export`: without
--tcp-established it refuses the clients' connections outright, and it has no way to skip
connections still being accepted (warmctl passes CRIU skip-in-flight).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import Completed, Podman, Warmctl, free_port
from memcached import Client, Dataset, wait_until_answers

PERSISTENT_CLIENTS = 4
SEED = 20261201


@dataclass(frozen=True)
class LoadSample:
    method: str
    size_mib: int
    repetition: int
    exit_status: int
    seconds: float
    requests: int
    new_connections: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    first_error: str


class _Clients:
    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.new_connections = 0
        self.threads = [threading.Thread(target=self._persistent, args=(n,), daemon=True)
                        for n in range(PERSISTENT_CLIENTS)]
        self.threads.append(threading.Thread(target=self._churn, daemon=True))

    def __enter__(self) -> _Clients:
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(self.latencies) < 100 and not self.errors:  # every client is answered
            if time.monotonic() > deadline:
                raise TimeoutError("the clients were not answered within 30 s")
            time.sleep(0.01)
        with self.lock:
            self.latencies.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def _timed(self, request: Callable[[], None], who: str) -> bool:
        started = time.monotonic()
        try:
            request()
        except (OSError, AssertionError) as err:
            with self.lock:
                self.errors.append(f"{who}: {type(err).__name__}: {err}")
            return False
        with self.lock:
            self.latencies.append(time.monotonic() - started)
        return True

    def _persistent(self, number: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        except OSError as err:
            with self.lock:
                self.errors.append(f"client {number}: {err}")
            return
        reader = sock.makefile("rb")
        counter = 0

        def set_then_get() -> None:
            key, value = b"load-%d-%d" % (number, counter % 1000), b"%d" % counter
            sock.sendall(b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (key, len(value), value, key))
            replies = [reader.readline() for _ in range(4)]
            if replies != [b"STORED\r\n", b"VALUE %s 0 %d\r\n" % (key, len(value)),
                           value + b"\r\n", b"END\r\n"]:
                raise AssertionError(f"unexpected answer {replies!r}")

        with sock, reader:
            while not self.stop.is_set():
                if not self._timed(set_then_get, f"client {number}"):
                    return
                counter += 1
                time.sleep(0.002)

    def _churn(self) -> None:
        def version() -> None:
            with socket.create_connection(("127.0.0.1", self.port), timeout=120) as sock:
                sock.sendall(b"version\r\n")
                if not sock.recv(64).startswith(b"VERSION"):
                    raise AssertionError("no VERSION answer")

        while not self.stop.is_set():
            if not self._timed(version, "new connection"):
                return
            with self.lock:
                self.new_connections += 1
            time.sleep(0.005)


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else 0.0


def _measure(method: str, size_mib: int, rep: int, port: int,
             command: Callable[[], Completed]) -> LoadSample:
    with _Clients(port) as clients:
        done = command()
        with clients.lock:
            latencies = sorted(clients.latencies)
            errors = list(clients.errors)
            new_connections = clients.new_connections
    return LoadSample(method, size_mib, rep, done.returncode, round(done.seconds, 3),
                      len(latencies), new_connections, len(errors),
                      round(_percentile(latencies, 0.5), 2), round(_percentile(latencies, 0.99), 2),
                      round(max(latencies, default=0.0) * 1000, 1),
                      errors[0] if errors else (done.stderr.strip().splitlines() or [""])[-1]
                      if done.returncode else "")


WARMCTL_METHOD = "warmctl snapshot --leave-running"
PODMAN_METHOD = "podman checkpoint --leave-running --tcp-established"


def run_under_load(size_mib: int, repeat: int, workdir: Path, podman: Podman,
                   warmctl: Warmctl, log: Callable[[str], None]) -> list[LoadSample]:
    source = podman.name(f"{size_mib}-loaded")
    port = free_port()
    podman.run_memcached(source, port, max(1024, 4 * size_mib))
    samples: list[LoadSample] = []
    try:
        wait_until_answers(port)
        log(f"under load, {size_mib} MiB: filling")
        with Client(port) as client:
            client.set_all(Dataset.generate(size_mib, SEED))
        archive = workdir / "under-load-podman.tar"
        for rep in range(repeat):
            log(f"under load, {size_mib} MiB: repetition {rep + 1}/{repeat}")
            order = [WARMCTL_METHOD, PODMAN_METHOD][rep % 2:] + [WARMCTL_METHOD,
                                                                 PODMAN_METHOD][:rep % 2]
            for method in order:
                if method == WARMCTL_METHOD:
                    sample = _measure(method, size_mib, rep, port, lambda: warmctl(
                        "snapshot", source, "under-load", "--leave-running", "--quiet",
                        check=False))
                    warmctl("rm", "under-load", "--all-generations", "--quiet", check=False)
                else:
                    sample = _measure(method, size_mib, rep, port, lambda: podman(
                        "container", "checkpoint", "--leave-running", "--tcp-established",
                        "--export", str(archive), source, check=False))
                    archive.unlink(missing_ok=True)
                samples.append(sample)
                log(f"  {method}: exit {sample.exit_status}, {sample.seconds:.1f} s, "
                    f"{sample.errors} client errors, latency p50 {sample.p50_ms} ms, "
                    f"p99 {sample.p99_ms} ms, max {sample.max_ms} ms")
    finally:
        podman.remove(source)
    return samples


def format_under_load(samples: list[LoadSample]) -> str:
    """One row per method: medians of the repetitions, failures and errors summed."""
    lines = [f"{'snapshot under load':<54} {'MiB':>5} {'ok':>5} {'s':>6} {'errors':>7} "
             f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"]
    for method in (WARMCTL_METHOD, PODMAN_METHOD):
        for size in sorted({s.size_mib for s in samples}):
            rows = [s for s in samples if s.method == method and s.size_mib == size]
            if not rows:
                continue

            def median(values: list[float]) -> float:
                ordered = sorted(values)
                return ordered[len(ordered) // 2]

            ok = sum(1 for r in rows if r.exit_status == 0)
            lines.append(
                f"{method:<54} {size:>5} {ok:>2}/{len(rows):<2} "
                f"{median([r.seconds for r in rows]):>6.1f} {sum(r.errors for r in rows):>7} "
                f"{median([r.p50_ms for r in rows]):>7.1f} "
                f"{median([r.p99_ms for r in rows]):>7.1f} {max(r.max_ms for r in rows):>7.0f}")
    return "\n".join(lines)


def as_records(samples: list[LoadSample]) -> list[dict[str, Any]]:
    return [asdict(s) for s in samples]
