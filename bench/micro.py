"""The CLI's own latency: `list --json` over a big catalogue, `--version`, and a <TAB>.

The catalogues are built through warmctl's Catalogue (so the schema is warmctl's own), with the
rows inserted directly over its SQLite connection: publishing 10,000 real archives would take
hours. Each row gets a small archive file so that the catalogue is consistent.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness import Warmctl, run, warmctl_program
from samples import MicroSample

from warmctl.catalogue import Catalogue, SnapshotRecord

RUNS = 10
GENERATIONS_PER_NAME = 10
LIST_TARGET_S = 0.300
VERSION_TARGET_S = 0.150
DOCTOR_TARGET_S = 2.0  # docs/doctor.md: doctor checks everything "in under two seconds"

_HOST = {"podman": "4.3.1", "runtime": "runc", "runtime_version": "runc version 1.1.5+ds1",
         "criu": "4.2.1", "kernel": "6.18.44", "hostname": "bench"}
_STATS = {"freezing_time": 100825, "frozen_time": 58468, "memdump_time": 649,
          "memwrite_time": 124, "pages_scanned": 47, "pages_written": 33}
# The catalogue's own encoding of everything beyond the fixed columns.
_META = SnapshotRecord(
    name="bench", container_name="bench", container_id="", image_name="", image_id="",
    compression="zstd", ports=["127.0.0.1:11211:11211/tcp"], labels={"tier": "cache"},
    host=_HOST, criu_stats=_STATS, extra={"plain_bytes": 1 << 30},
).meta()


def build_catalogue(home: Path, count: int) -> None:
    """A catalogue of count snapshots: count / 10 names of 10 generations each."""
    catalogue = Catalogue(home).open()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    next_generation: dict[str, int] = {}
    for i in range(count):
        name, generation = f"svc-{i // GENERATIONS_PER_NAME:05d}", i % GENERATIONS_PER_NAME + 1
        archive = f"{name}@{generation}.tar"
        content = f"bench archive {archive}\n".encode()
        (catalogue.archives_dir / archive).write_bytes(content)
        rows.append((
            name, generation, (start + timedelta(minutes=i)).isoformat(), archive,
            len(content), hashlib.sha256(content).hexdigest(), "zstd", name, f"{i:064x}",
            "localhost/warmctl-test/memcached:latest", "30cc6c24" + "0" * 56,
            json.dumps(_META),
        ))
        next_generation[name] = generation + 1
    db = catalogue.db
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO snapshots (name, generation, created, archive, size_bytes, sha256, "
        "compression, container_name, container_id, image_name, image_id, meta) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.executemany("INSERT INTO names (name, next_generation) VALUES (?, ?)",
                   next_generation.items())
    db.execute("COMMIT")
    catalogue.close()


def time_list(workdir: Path, count: int) -> MicroSample:
    warmctl = Warmctl(workdir / f"list-{count}")
    build_catalogue(warmctl.home, count)
    runs = [warmctl("list", "--json") for _ in range(RUNS)]
    listed = json.loads(runs[0].stdout)
    if len(listed) != count:
        raise RuntimeError(f"warmctl list --json printed {len(listed)} snapshots, not {count}")
    return MicroSample("list-json", f"warmctl list --json ({count:,} snapshots)",
                       [r.seconds for r in runs], LIST_TARGET_S)


def time_version() -> MicroSample:
    runs = [run([warmctl_program(), "--version"]) for _ in range(RUNS)]
    if not runs[0].stdout.startswith("warmctl "):
        raise RuntimeError(f"warmctl --version printed {runs[0].stdout!r}")
    return MicroSample("version", "warmctl --version", [r.seconds for r in runs],
                       VERSION_TARGET_S)


def time_completion(workdir: Path, count: int) -> MicroSample:
    """What bash runs on `warmctl resume <TAB>`: every name and NAME@GEN is a candidate."""
    home = workdir / f"complete-{count}"
    build_catalogue(home, count)
    env = {"_WARMCTL_COMPLETE": "complete_bash", "COMP_WORDS": "warmctl resume ",
           "COMP_CWORD": "2", "WARMCTL_HOME": str(home)}
    runs = [run([warmctl_program()], env=env) for _ in range(RUNS)]
    candidates = runs[0].stdout.splitlines()
    expected = count + count // GENERATIONS_PER_NAME
    if len(candidates) != expected:
        raise RuntimeError(f"completion offered {len(candidates)} candidates, not {expected}")
    return MicroSample("completion", f"completion: warmctl resume <TAB> ({count:,} snapshots)",
                       [r.seconds for r in runs])


def time_doctor(workdir: Path) -> MicroSample:
    """`warmctl doctor` without --probe: podman, runtime, CRIU, criu check, the catalogue."""
    warmctl = Warmctl(workdir / "doctor")
    runs = [warmctl("doctor", "--json") for _ in range(RUNS)]
    if json.loads(runs[0].stdout).get("ok") is not True:
        raise RuntimeError(f"warmctl doctor found a problem: {runs[0].stdout}")
    return MicroSample("doctor", "warmctl doctor", [r.seconds for r in runs], DOCTOR_TARGET_S)


def run_micro(workdir: Path) -> list[MicroSample]:
    return [time_list(workdir, 10_000), time_version(), time_completion(workdir, 1_000),
            time_doctor(workdir)]
