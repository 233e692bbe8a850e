"""How long a shell waits on <TAB>: one completion request, with 1,000 snapshots catalogued.

    .venv/bin/python bench/completion.py [--snapshots 1000] [--runs 10] [--json]

Builds a throwaway catalogue with that many snapshots (tiny archives, real rows), then runs
the installed `warmctl` the way the bash completion script does (_WARMCTL_COMPLETE=complete_bash,
COMP_WORDS, COMP_CWORD), each request a fresh process, and prints the median, min and max wall
time per request. The budget is 150 ms; exit status 1 when a median exceeds it. Needs neither
root nor podman.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from warmctl.catalogue import Catalogue, SnapshotRecord

BUDGET_MS = 150.0
REQUESTS = {
    "refs": ("warmctl resume ", 2),          # every NAME and NAME@GEN
    "refs-prefix": ("warmctl resume svc-01", 2),
    "commands": ("warmctl res", 1),
}


def build_catalogue(home: Path, count: int) -> None:
    """count snapshots over count/10 names, 10 generations each."""
    data = b"bench"
    digest = hashlib.sha256(data).hexdigest()
    with Catalogue(home).open() as catalogue:
        for i in range(count):
            name = f"svc-{i // 10:03d}"
            temp = catalogue.new_temp_file()
            temp.path.write_bytes(data)
            record = SnapshotRecord(name=name, container_name=name, container_id="c" * 64,
                                    image_name="localhost/bench:latest", image_id="i" * 64,
                                    compression="none")
            catalogue.publish(temp, record, sha256=digest)


def warmctl_program() -> str:
    beside = Path(sys.executable).parent / "warmctl"
    return str(beside) if beside.exists() else "warmctl"


def time_request(program: str, home: Path, line: str, cword: int, runs: int) -> dict[str, float]:
    env = {**os.environ, "WARMCTL_HOME": str(home), "_WARMCTL_COMPLETE": "complete_bash",
           "COMP_WORDS": line, "COMP_CWORD": str(cword)}
    env.pop("WARMCTL_DEBUG", None)
    times: list[float] = []
    candidates = 0
    for _ in range(runs + 1):  # the first run warms the page cache and is not counted
        started = time.perf_counter()
        result = subprocess.run([program], env=env, capture_output=True, text=True,  # noqa: S603
                                check=True)
        times.append((time.perf_counter() - started) * 1000)
        candidates = len(result.stdout.splitlines())
    times = times[1:]
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1), "candidates": candidates}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    program = warmctl_program()
    with tempfile.TemporaryDirectory(prefix="warmctl-bench-") as tmp:
        home = Path(tmp) / "home"
        build_catalogue(home, args.snapshots)
        results = {name: time_request(program, home, line, cword, args.runs)
                   for name, (line, cword) in REQUESTS.items()}
    over = [name for name, r in results.items() if r["median_ms"] > BUDGET_MS]
    if args.json:
        print(json.dumps({"benchmark": "completion", "snapshots": args.snapshots,
                          "runs": args.runs, "budget_ms": BUDGET_MS, "results": results}))
    else:
        print(f"completion requests, {args.snapshots} snapshots, median of {args.runs} "
              f"(budget {BUDGET_MS:g} ms):")
        for name, r in results.items():
            print(f"  {name:12} {r['median_ms']:7.1f} ms  (min {r['min_ms']:.1f}, "
                  f"max {r['max_ms']:.1f}; {r['candidates']} candidates)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
