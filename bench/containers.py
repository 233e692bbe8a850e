"""The container benchmarks at one memory size: snapshot and resume, warmctl against podman.

One source container is filled once and checkpointed with --leave-running by both sides, so it
keeps its data across repetitions. Each repetition runs every method once, in an order rotated
by the repetition number (A B, B A, ...), so that the machine's noise falls on all of them. A
repetition's archives are deleted at its end: at 1 GiB they are gigabytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from harness import Podman, Warmctl, free_port, timed
from memcached import Client, Dataset, wait_first_hit, wait_until_answers
from samples import (
    COLD_REFILL,
    PODMAN_CHECKPOINT_IN_PLACE,
    PODMAN_EXPORT,
    PODMAN_IMPORT,
    PODMAN_RESTORE_IN_PLACE,
    WARMCTL_RESUME,
    WARMCTL_SNAPSHOT,
    Method,
    ResumeSample,
    SnapshotSample,
)

SEED = 20261127


def memcached_memory_mib(size_mib: int) -> int:
    """memcached's -m: room for the values plus its per-item overhead, never evicting."""
    return max(1024, 4 * size_mib)


def rotated(steps: list[Callable[[int], None]], repetition: int) -> list[Callable[[int], None]]:
    k = repetition % len(steps)
    return steps[k:] + steps[:k]


def podman_criu_stat(print_stats_stdout: str, key: str) -> int | None:
    """One of CRIU's statistics from podman's --print-stats output (frozen_time on
    checkpoint, restore_time on restore), in microseconds."""
    stats = json.loads(print_stats_stdout)["container_statistics"][0]
    value = (stats.get("criu_statistics") or {}).get(key)
    return int(value) if value is not None else None


class SizeBenchmark:
    def __init__(self, size_mib: int, workdir: Path, podman: Podman, warmctl: Warmctl) -> None:
        self.size_mib = size_mib
        self.workdir = workdir
        self.podman = podman
        self.warmctl = warmctl
        self.memory_mib = memcached_memory_mib(size_mib)
        self.data = Dataset.generate(size_mib, SEED)
        self.source = podman.name(f"{size_mib}-source")
        self.snapshot_name = f"bench-{size_mib}"
        self.snapshots: list[SnapshotSample] = []
        self.resumes: list[ResumeSample] = []
        self.source_fill_s = 0.0
        # This repetition's archives, set by the snapshot steps, used by the resume steps.
        self.podman_archive = workdir / f"podman-{size_mib}.tar"
        self.warmctl_ref = ""

    # --- the run ------------------------------------------------------------------------------

    def run(self, repetitions: int, log: Callable[[str], None]) -> None:
        log(f"{self.size_mib} MiB: {len(self.data.keys):,} values, "
            f"{self.data.value_bytes / (1 << 20):.0f} MiB in all, memcached -m {self.memory_mib}; "
            "filling the source container")
        self.fill_source()
        for rep in range(repetitions):
            log(f"{self.size_mib} MiB: repetition {rep + 1}/{repetitions}")
            for step in rotated([self.podman_export, self.warmctl_snapshot], rep):
                step(rep)
            for step in rotated([self.podman_import_then_in_place, self.warmctl_resume,
                                 self.cold_refill], rep):
                step(rep)
            self.drop_archives()
        self.podman.remove(self.source)

    def fill_source(self) -> None:
        port = free_port()
        self.source_fill_s, _ = timed(lambda: self.start_and_fill(self.source, port))
        with Client(port) as client:
            wrong = client.count_mismatches(self.data)
            evictions = int(client.stats()["evictions"])
        if wrong or evictions:
            raise RuntimeError(f"source container lost data after filling: {wrong} values "
                               f"wrong, {evictions} evictions (memcached -m {self.memory_mib})")

    def start_and_fill(self, name: str, port: int) -> None:
        self.podman.run_memcached(name, port, self.memory_mib)
        wait_until_answers(port)
        with Client(port) as client:
            client.set_all(self.data)

    def drop_archives(self) -> None:
        self.podman_archive.unlink(missing_ok=True)
        if self.warmctl_ref:
            self.warmctl("rm", self.warmctl_ref, "--quiet")
            self.warmctl_ref = ""

    # --- snapshot steps -----------------------------------------------------------------------

    def podman_export(self, rep: int) -> None:
        done = self.podman("container", "checkpoint", "--leave-running", "--export",
                           str(self.podman_archive), "--print-stats", self.source)
        self.record_snapshot(PODMAN_EXPORT, rep, done.seconds, self.podman_archive.stat().st_size,
                             podman_criu_stat(done.stdout, "frozen_time"))

    def warmctl_snapshot(self, rep: int) -> None:
        done = self.warmctl("snapshot", self.source, self.snapshot_name, "--leave-running",
                            "--json")
        snap = json.loads(done.stdout)
        self.warmctl_ref = snap["ref"]
        frozen = snap.get("criu_stats", {}).get("frozen_time")
        self.record_snapshot(WARMCTL_SNAPSHOT, rep, done.seconds, int(snap["size_bytes"]),
                             int(frozen) if frozen is not None else None)

    def record_snapshot(self, method: Method, rep: int, seconds: float,
                        archive_bytes: int | None, frozen_us: int | None) -> None:
        self.snapshots.append(SnapshotSample(method.key, self.size_mib, rep, seconds,
                                             archive_bytes, frozen_us))

    # --- resume steps -------------------------------------------------------------------------

    def podman_import_then_in_place(self, rep: int) -> None:
        """restore --import; then, on that fresh copy, checkpoint and restore in place."""
        name, port = self.podman.name(f"{self.size_mib}-import-{rep}"), free_port()
        try:
            done = self.podman("container", "restore", "--import", str(self.podman_archive),
                               "--name", name, "-p", f"127.0.0.1:{port}:11211", "--print-stats")
            self.record_resume(PODMAN_IMPORT, rep, done.seconds, port,
                               podman_criu_stat(done.stdout, "restore_time"))
            done = self.podman("container", "checkpoint", "--print-stats", name)
            self.record_snapshot(PODMAN_CHECKPOINT_IN_PLACE, rep, done.seconds, None,
                                 podman_criu_stat(done.stdout, "frozen_time"))
            done = self.podman("container", "restore", "--print-stats", name)
            self.record_resume(PODMAN_RESTORE_IN_PLACE, rep, done.seconds, port,
                               podman_criu_stat(done.stdout, "restore_time"))
        finally:
            self.podman.remove(name)

    def warmctl_resume(self, rep: int) -> None:
        name, port = self.podman.name(f"{self.size_mib}-resume-{rep}"), free_port()
        try:
            done = self.warmctl("resume", self.warmctl_ref, "--name", name,
                                "--publish", f"127.0.0.1:{port}:11211", "--json")
            restore_time = json.loads(done.stdout).get("criu_stats", {}).get("restore_time")
            self.record_resume(WARMCTL_RESUME, rep, done.seconds, port, restore_time)
        finally:
            self.podman.remove(name)

    def cold_refill(self, rep: int) -> None:
        """What the cache must do without a snapshot: a new container, refilled by a client."""
        name, port = self.podman.name(f"{self.size_mib}-cold-{rep}"), free_port()
        try:
            seconds, _ = timed(lambda: self.start_and_fill(name, port))
            self.record_resume(COLD_REFILL, rep, seconds, port)
        finally:
            self.podman.remove(name)

    def record_resume(self, method: Method, rep: int, seconds: float, port: int,
                      criu_restore_us: int | None = None) -> None:
        """Time to the first hit, then read every value back."""
        first_hit_s, _ = timed(
            lambda: wait_first_hit(port, self.data.keys[0], self.data.values[0]))

        def check() -> int:
            with Client(port) as client:
                return client.count_mismatches(self.data)

        check_s, mismatches = timed(check)
        self.resumes.append(ResumeSample(method.key, self.size_mib, rep, seconds,
                                         first_hit_s, check_s, mismatches, criu_restore_us))
