"""warmctl against podman's own checkpoint/restore, on memcached full of random values.

Run as root on a host prepared by scripts/provision-host:

    .venv/bin/python bench/bench.py [--sizes 256,1024] [--repeat 3] [--out bench/results]
                                    [--publish-chart] [--no-micro | --micro-only]
                                    [--volumes | --volumes-only] [--volumes-mib 1024,1024]
                                    [--no-under-load | --under-load-only]

Prints a table (medians, ratios to podman's defaults) and the targets with PASS/FAIL; writes
OUT/results.json (every raw figure and the machine's facts) and OUT/chart.png. Exit status: 0
when everything was measured and every value came back, 1 otherwise (targets do not count).
See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from containers import SizeBenchmark
from harness import CommandFailed, Podman, Warmctl, run, warmctl_program
from micro import run_micro
from report import (
    Target,
    as_json,
    container_targets,
    draw_chart,
    format_micro,
    format_table,
    micro_targets,
    summarize,
)
from samples import MicroSample
from under_load import LoadSample, as_records, format_under_load, run_under_load
from volumes import VolumeBenchmark, format_volumes, summarize_volumes

REPO = Path(__file__).resolve().parent.parent
SCRATCH = Path("/var/tmp")
GIB = 1 << 30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,1024",
                        help="memcached data sizes in MiB, comma-separated (default: 256,1024)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repetitions per method and size; medians are reported (default: 3)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                        help="where results.json and chart.png go (default: bench/results)")
    parser.add_argument("--publish-chart", action="store_true",
                        help="also write the chart to docs/bench-chart.png "
                             "(shown in docs/benchmark.md)")
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--no-micro", action="store_true", help="skip the CLI latency benchmarks")
    parts.add_argument("--micro-only", action="store_true",
                       help="only the CLI latency benchmarks (no containers, no root needed)")
    section = parser.add_mutually_exclusive_group()
    section.add_argument("--volumes", action="store_true",
                         help="also measure consistent volume capture against podman's "
                              "--leave-running (see bench/volumes.py)")
    section.add_argument("--volumes-only", action="store_true",
                         help="only the volume capture section")
    parser.add_argument("--volumes-mib", default="1024,1024",
                        help="the volume section's memcached data and volume data, MiB "
                             "(default: 1024,1024)")
    loaded = parser.add_mutually_exclusive_group()
    loaded.add_argument("--no-under-load", action="store_true",
                        help="skip the snapshot-under-load rows")
    loaded.add_argument("--under-load-only", action="store_true",
                        help="only snapshot under load, at the largest size: clients' errors "
                             "and latency during warmctl's and podman's --leave-running "
                             "checkpoints")
    args = parser.parse_args(argv)
    if args.micro_only and args.under_load_only:
        parser.error("--micro-only and --under-load-only exclude each other")
    try:
        args.volumes_mib = [int(s) for s in args.volumes_mib.split(",")]
    except ValueError:
        parser.error(f"--volumes-mib: expected MEMORY,VOLUME in MiB, got {args.volumes_mib!r}")
    if len(args.volumes_mib) != 2 or min(args.volumes_mib) < 1:
        parser.error("--volumes-mib: expected two positive numbers, MEMORY,VOLUME")
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes: expected MiB numbers like 256,1024, got {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1 or args.repeat < 1:
        parser.error("--sizes and --repeat must be positive")
    return args


def log(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


# --- before anything starts ---------------------------------------------------------------------

def preflight(sizes: list[int], repeat: int) -> None:
    """Fail before the first container, not an hour in."""
    if os.geteuid() != 0:
        raise SystemExit("bench: must run as root (podman checkpoint/restore needs it)")
    if run(["podman", "image", "exists", Podman.IMAGE], check=False).returncode != 0:
        raise SystemExit(f"bench: image {Podman.IMAGE} is missing: run scripts/provision-host")
    # At once: podman's archive, warmctl's (each up to ~1.2x the data, uncompressed), a copy in
    # podman's storage for the in-place restore, and slack.
    need = 4 * max(sizes) * (1 << 20) + 2 * GIB
    for path in (SCRATCH, Path("/var/lib/containers")):
        if path.exists() and shutil.disk_usage(path).free < need:
            raise SystemExit(f"bench: {path} has {shutil.disk_usage(path).free / GIB:.1f} GiB "
                             f"free; {need / GIB:.1f} GiB needed for {max(sizes)} MiB")
    if repeat < 3:
        log(f"--repeat {repeat}: fewer than 3 repetitions, medians are not meaningful")


def first_line(argv: list[str]) -> str:
    try:
        done = run(argv, check=False)
    except FileNotFoundError:
        return "missing"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def machine_facts() -> dict[str, Any]:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    # scripts/testhost bench names the commit: its copy of the checkout has no .git.
    commit = os.environ.get("WARMCTL_BENCH_COMMIT")
    if commit is None:
        git = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
        dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--", "warmctl"],
                    check=False)
        commit = git + (" (warmctl/ modified)" if dirty.stdout.strip() else "")
    return {
        "kernel": platform.release(),
        "podman": first_line(["podman", "version", "--format", "{{.Client.Version}}"]),
        "runtime": first_line(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"]),
        "runc": first_line(["runc", "--version"]),
        "criu": first_line(["criu", "--version"]).removeprefix("Version: "),
        "warmctl": first_line([warmctl_program(), "--version"]),
        "warmctl_commit": commit,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "memory_total": meminfo.get("MemTotal", "").strip(),
        "hostname": platform.node(),
        "load_average_at_start": os.getloadavg(),
    }


# --- the run ------------------------------------------------------------------------------------

def run_containers(args: argparse.Namespace, workdir: Path, done: list[SizeBenchmark],
                   loaded: list[LoadSample]) -> None:
    """Measure every size, then (unless told otherwise) snapshot under load at the largest;
    done and loaded get what was measured as it is, so a failure keeps what was had."""
    podman = Podman()
    warmctl = Warmctl(workdir / "home")
    try:
        if not args.under_load_only:
            for size in args.sizes:
                done.append(SizeBenchmark(size, workdir, podman, warmctl))
                done[-1].run(args.repeat, log)
        if not args.no_under_load:
            loaded += run_under_load(max(args.sizes), args.repeat, workdir, podman, warmctl,
                                     log)
    finally:
        podman.cleanup()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # through every finally: containers and archives go


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    if not args.micro_only:
        preflight(args.sizes + (args.volumes_mib if args.volumes or args.volumes_only else []),
                  args.repeat)
    facts = machine_facts()
    workdir = Path(tempfile.mkdtemp(prefix="warmctl-bench-", dir=SCRATCH))
    benches: list[SizeBenchmark] = []
    loaded: list[LoadSample] = []
    micro: list[MicroSample] = []
    volume_bench: VolumeBenchmark | None = None
    error: str | None = None
    try:
        if not (args.micro_only or args.volumes_only):
            run_containers(args, workdir, benches, loaded)
        if args.volumes or args.volumes_only:
            podman = Podman()
            memory_mib, volume_mib = args.volumes_mib
            volume_bench = VolumeBenchmark(memory_mib, volume_mib, workdir, podman,
                                           Warmctl(workdir / "volumes-home"))
            try:
                volume_bench.run(args.repeat, log)
            finally:
                podman.cleanup()
        if not (args.no_micro or args.volumes_only or args.under_load_only):
            log("CLI latency: list --json, --version, completion")
            micro = run_micro(workdir)
    except (CommandFailed, RuntimeError, TimeoutError, OSError) as exc:
        error = str(exc)
        log(f"failed: {error} (reporting what was measured before)")
    except KeyboardInterrupt:
        log("interrupted; containers and archives removed")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    facts["load_average_at_end"] = os.getloadavg()
    status = report(args, facts, started, benches, micro, error, loaded, volume_bench)
    return 1 if error else status


def report(args: argparse.Namespace, facts: dict[str, Any], started: datetime,
           benches: list[SizeBenchmark], micro: list[MicroSample], error: str | None,
           loaded: list[LoadSample], volume_bench: VolumeBenchmark | None = None) -> int:
    snapshots = [s for b in benches for s in b.snapshots]
    resumes = [r for b in benches for r in b.resumes]
    rows = summarize(snapshots, resumes)
    targets: list[Target] = container_targets(rows) + micro_targets(micro)
    if rows:
        print(format_table(rows))
        print()
    if micro:
        print(format_micro(micro))
        print()
    volume_rows = summarize_volumes(volume_bench.samples) if volume_bench else []
    if volume_bench and volume_rows:
        print(format_volumes(volume_rows, volume_bench.size_mib, volume_bench.volume_mib))
    if loaded:
        print(format_under_load(loaded))
        print()
    for target in targets:
        print(target.text)
    if error:
        print(f"INCOMPLETE: {error}")

    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "error": error,
        "command": {"sizes_mib": args.sizes, "repeat": args.repeat},
        "machine": facts,
        "source_fill_s": {str(b.size_mib): b.source_fill_s for b in benches},
        "snapshots": [vars(s) for s in snapshots],
        "resumes": [vars(r) for r in resumes],
        "micro": [{**vars(m), "median_s": m.median_s} for m in micro],
        "volumes": {"memory_mib": volume_bench.size_mib, "volume_mib": volume_bench.volume_mib,
                    "samples": [vars(s) for s in volume_bench.samples],
                    "summary": volume_rows} if volume_bench else None,
        "under_load": as_records(loaded),
        **as_json(rows, targets),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nraw figures: {args.out / 'results.json'}")
    if rows:
        publish_chart(rows, args, facts)
    return 1 if any(r.mismatches for r in rows) else 0


def publish_chart(rows: list[Any], args: argparse.Namespace, facts: dict[str, Any]) -> None:
    title = (f"warmctl vs podman, memcached with random values ({facts['cpu_count']} CPUs, "
             f"podman {facts['podman']}, CRIU {facts['criu']}, {datetime.now(UTC):%Y-%m-%d})")
    chart = args.out / "chart.png"
    if not draw_chart(rows, chart, title):
        log("matplotlib is missing: no chart (pip install '.[bench]')")
        return
    print(f"chart: {chart}")
    if args.publish_chart:
        published = REPO / "docs" / "bench-chart.png"
        shutil.copyfile(chart, published)
        print(f"chart published: {published}")


if __name__ == "__main__":
    sys.exit(main())
