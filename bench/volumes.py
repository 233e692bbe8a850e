"""The cost of capturing named volumes at the memory's instant (bench.py --volumes).

One source: memcached holding SIZE MiB of random values, with a named volume at /data holding
VOLUME MiB of random bytes (written through the volume's mountpoint before the container
starts). A client stays connected and asks `version` in a loop, so both methods need
--tcp-established; the longest wait for one answer while the command runs is the freeze the
service's clients see. Each repetition runs both methods, in rotated order:

- podman's own `checkpoint --leave-running --export`: the volume is tarred after the container
  runs again (memory and volume from different instants), the freeze is CRIU's dump alone;
- `warmctl snapshot --leave-running`: the cgroup stays frozen until podman has tarred the
  volume (one instant), so the freeze also covers the tarring.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from containers import memcached_memory_mib, podman_criu_stat, rotated
from harness import Podman, Warmctl, free_port
from memcached import Client, Dataset, wait_until_answers

MIB = 1 << 20
SEED = 20261201
PODMAN_PLAIN = "podman checkpoint --leave-running (volume later)"
WARMCTL_CONSISTENT = "warmctl snapshot --leave-running (one instant)"


@dataclass
class VolumeSample:
    method: str
    repetition: int
    seconds: float  # the command's wall time
    client_freeze_s: float  # longest wait for one `version` answer while it ran
    frozen_us: int | None  # CRIU's frozen_time


class Prober:
    """A connected client asking `version` as fast as it gets answers; reports the longest
    wait for an answer within a window."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.answers: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        reader = self.sock.makefile("rb")
        while not self._stop.is_set():
            self.sock.sendall(b"version\r\n")
            if not reader.readline().startswith(b"VERSION"):
                raise ConnectionError("memcached did not answer `version`")
            self.answers.append(time.perf_counter())
            time.sleep(0.001)  # a millisecond's resolution, without taking a core

    def longest_wait(self, start: float, end: float) -> float:
        inside = [t for t in list(self.answers) if t >= start]
        stamps = [start, *[t for t in inside if t <= end]]
        after = [t for t in inside if t > end]
        if after:
            stamps.append(after[0])  # a freeze still going at the end counts up to its answer
        return max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.sock.close()


@dataclass
class VolumeBenchmark:
    size_mib: int
    volume_mib: int
    workdir: Path
    podman: Podman
    warmctl: Warmctl
    samples: list[VolumeSample] = field(default_factory=list)

    def run(self, repetitions: int, log: Callable[[str], None]) -> None:
        source, volume = self.podman.name("vol-source"), self.podman.name("vol-data")
        port = free_port()
        archive = self.workdir / "podman-volumes.tar"
        try:
            log(f"volumes: {self.size_mib} MiB in memcached, {self.volume_mib} MiB on its "
                "volume; filling")
            self.fill_volume(volume)
            self.podman("run", "-d", "--name", source, "-v", f"{volume}:/data",
                        "-p", f"127.0.0.1:{port}:11211", Podman.IMAGE,
                        "-m", str(memcached_memory_mib(self.size_mib)), "-p", "11211")
            wait_until_answers(port)
            with Client(port) as client:
                client.set_all(Dataset.generate(self.size_mib, SEED))
            prober = Prober(port)
            try:
                for rep in range(repetitions):
                    log(f"volumes: repetition {rep + 1}/{repetitions}")
                    steps = [lambda r: self.podman_plain(r, source, archive, prober),
                             lambda r: self.warmctl_consistent(r, source, prober)]
                    for step in rotated(steps, rep):
                        step(rep)
            finally:
                prober.close()
        finally:
            archive.unlink(missing_ok=True)
            self.podman.remove(source)
            self.podman("volume", "rm", "--force", volume, check=False)

    def fill_volume(self, volume: str) -> None:
        self.podman("volume", "create", volume)
        mountpoint = self.podman("volume", "inspect", "--format", "{{.Mountpoint}}",
                                 volume).stdout.strip()
        with open(Path(mountpoint) / "data.bin", "wb") as out:
            for _ in range(self.volume_mib):
                out.write(os.urandom(MIB))

    def podman_plain(self, rep: int, source: str, archive: Path, prober: Prober) -> None:
        start = time.perf_counter()
        done = self.podman("container", "checkpoint", "--leave-running", "--tcp-established",
                           "--export", str(archive), "--print-stats", source)
        self.samples.append(VolumeSample(
            PODMAN_PLAIN, rep, done.seconds,
            prober.longest_wait(start, time.perf_counter()),
            podman_criu_stat(done.stdout, "frozen_time")))
        archive.unlink(missing_ok=True)

    def warmctl_consistent(self, rep: int, source: str, prober: Prober) -> None:
        start = time.perf_counter()
        done = self.warmctl("snapshot", source, "bench-volumes", "--leave-running",
                            "--tcp-established", "--json")
        end = time.perf_counter()
        snap = json.loads(done.stdout)
        frozen = snap.get("criu_stats", {}).get("frozen_time")
        self.samples.append(VolumeSample(
            WARMCTL_CONSISTENT, rep, done.seconds, prober.longest_wait(start, end),
            int(frozen) if frozen is not None else None))
        self.warmctl("rm", snap["ref"], "--quiet")


def summarize_volumes(samples: list[VolumeSample]) -> list[dict[str, Any]]:
    rows = []
    for method in (PODMAN_PLAIN, WARMCTL_CONSISTENT):
        mine = [s for s in samples if s.method == method]
        if not mine:
            continue
        frozen = [s.frozen_us / 1000 for s in mine if s.frozen_us is not None]
        rows.append({
            "method": method,
            "runs": len(mine),
            "seconds_median": statistics.median(s.seconds for s in mine),
            "client_freeze_ms_median": statistics.median(s.client_freeze_s * 1000 for s in mine),
            "client_freeze_ms_max": max(s.client_freeze_s * 1000 for s in mine),
            "criu_frozen_ms_median": statistics.median(frozen) if frozen else None,
        })
    return rows


def format_volumes(rows: list[dict[str, Any]], size_mib: int, volume_mib: int) -> str:
    lines = [f"volumes: memcached {size_mib} MiB + volume {volume_mib} MiB (medians)",
             "| method | snapshot (s) | client-visible freeze (ms) | max (ms) | CRIU frozen (ms) |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        criu = row["criu_frozen_ms_median"]
        lines.append(f"| {row['method']} | {row['seconds_median']:.2f} | "
                     f"{row['client_freeze_ms_median']:.0f} | {row['client_freeze_ms_max']:.0f} | "
                     f"{'' if criu is None else f'{criu:.0f}'} |")
    return "\n".join(lines)
