"""Same-run A/B of this project at two git revisions: what a change costs or buys.

    python benchmarks/ab.py --base 5c3fe37 --workloads tiny,payload --runs 5 [--system shared]

Exports revision ``--base`` (default HEAD~1) into a temporary tree, then alternates runs
of ``systems/ours.py`` with PYTHONPATH on that tree's ``src`` and on this checkout's
``src`` (order rotating each round), and prints medians and the ratio new/base for
each figure. The drivers, workloads and hard timeouts are bench.py's own.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIGURES = {"tiny": "jobs_per_s", "payload": "mb_per_s", "latency": "p50_ms",
           "startup": "seconds", "program": "seconds"}


def export(rev: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "src"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD~1")
    ap.add_argument("--new", default=None, help="a revision (default: this checkout)")
    ap.add_argument("--workloads", default="tiny,payload,latency")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="WORKLOAD.PARAM=VALUE")
    ap.add_argument("--system", default="ours", choices=["ours", "shared"],
                    help="shared: through dispyscheduler (SharedJobCluster)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dispy-ab-"))
    try:
        trees = {"base": export(args.base, tmp / "base"),
                 "new": export(args.new, tmp / "new") if args.new else ROOT / "src"}
        python = Path(sys.executable)
        logs = HERE / ".logs"
        logs.mkdir(exist_ok=True)
        for workload in args.workloads.split(","):
            params = dict(bench.FULL[workload])
            for item in args.set:
                key, _, value = item.partition("=")
                w, _, p = key.partition(".")
                if w == workload:
                    params[p] = float(value) if "." in value else int(value)
            got: dict[str, list[float]] = {"base": [], "new": []}
            for i in range(args.runs):
                for name in (["base", "new"] if i % 2 == 0 else ["new", "base"]):
                    record = bench.run_one(args.system, python, workload, params,
                                           bench.TIMEOUTS[workload], logs, str(trees[name]))
                    value = record.get("metrics", {}).get(FIGURES[workload])
                    if record.get("status") == "ok" and value is not None:
                        got[name].append(float(value))
                    print(f"  {workload} {name}: {value} ({record.get('status')})", flush=True)
            if got["base"] and got["new"]:
                b, n = statistics.median(got["base"]), statistics.median(got["new"])
                print(f"{workload}: base {b:.4g}  new {n:.4g}  new/base {n / b:.3f}"
                      f"  ({FIGURES[workload]}, medians of {args.runs} runs each)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
