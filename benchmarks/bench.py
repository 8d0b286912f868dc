"""Run every workload on every system, alternating, and report medians side by side.

    python benchmarks/bench.py            # everything (make bench)
    python benchmarks/bench.py --quick    # tiny sizes, one run each: a smoke test

Each run is one subprocess (benchmarks/systems/<system>.py in that system's venv) with a
hard timeout: a run that does not answer in time is recorded as "hung" and everything it
started is killed (process group, then every process carrying the run's marker).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "systems"))

import envs  # noqa: E402
from common import RESULT_PREFIX, TAG_VAR, kill_tagged  # noqa: E402

SYSTEMS = ["ours", "shared", "orig", "dask", "ray", "pool"]
DRIVERS = {"ours": "ours.py", "shared": "ours_shared.py", "orig": "orig.py",
           "dask": "dask_distributed.py",
           "ray": "ray_cluster.py", "pool": "pool.py"}
WORKLOADS = ["tiny", "latency", "cpu", "payload", "startup", "program", "memory", "many-nodes",
             "many-nodes-2", "reliability"]
QUICK_KIND = {"tiny", "latency", "cpu", "payload", "startup", "program"}
HEAVY_KIND = {"memory", "many-nodes", "many-nodes-2"}

FULL: dict[str, dict[str, Any]] = {
    "tiny": {"jobs": 5000},
    "latency": {"jobs": 200, "quiet": 1.0},
    "cpu": {"jobs": 40, "job_ms": 100},
    "payload": {"jobs": 20, "mb": 8},
    "startup": {},
    "program": {"programs": 3, "program_timeout": 30},
    "memory": {"jobs": 50000},
    "many-nodes": {"nodes": 20, "jobs": 20000, "ready_timeout": 180},
    "many-nodes-2": {"nodes": 2, "jobs": 20000, "ready_timeout": 60},
    "reliability": {"rounds": 10, "jobs": 10000, "job_timeout": 30},
}
QUICK: dict[str, dict[str, Any]] = {
    "tiny": {"jobs": 300},
    "latency": {"jobs": 30, "quiet": 0.2},
    "cpu": {"jobs": 6, "job_ms": 100},
    "payload": {"jobs": 4, "mb": 8},
    "startup": {},
    "program": {"programs": 1, "program_timeout": 30},
    "memory": {"jobs": 2000},
    "many-nodes": {"nodes": 4, "jobs": 600, "ready_timeout": 90},
    "many-nodes-2": {"nodes": 2, "jobs": 600, "ready_timeout": 60},
    "reliability": {"rounds": 2, "jobs": 300, "job_timeout": 10},
}
TIMEOUTS = {"tiny": 240, "latency": 180, "cpu": 180, "payload": 240, "startup": 120,
            "program": 180,  # 4 programs of at most 30 s each
            "memory": 300, "many-nodes": 600, "many-nodes-2": 300, "reliability": 2400}
QUICK_TIMEOUTS = {**{w: 120 for w in WORKLOADS}, "many-nodes": 240, "reliability": 240}

# (metric, better) per workload; the first is the headline figure
METRICS: dict[str, list[tuple[str, str]]] = {
    "tiny": [("jobs_per_s", "higher")],
    "latency": [("p50_ms", "lower"), ("p99_ms", "lower")],
    "cpu": [("efficiency", "higher")],
    "payload": [("mb_per_s", "higher")],
    "startup": [("seconds", "lower")],
    "program": [("seconds", "lower")],
    "memory": [("bytes_per_job", "lower")],
    "many-nodes": [("jobs_per_s", "higher"), ("client_cpu_us_per_job", "lower"),
                   ("scheduler_cpu_us_per_job", "lower")],
    "many-nodes-2": [("jobs_per_s", "higher"), ("client_cpu_us_per_job", "lower"),
                     ("scheduler_cpu_us_per_job", "lower")],
    "reliability": [("lost", "lower"), ("stuck", "lower"), ("jobs_per_s", "higher")],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes and 1 run of everything (a smoke test, ~5 minutes)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"comma-separated subset of {','.join(SYSTEMS)}")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs of tiny, latency, cpu, payload, startup, program "
                    "(default 5; quick 1)")
    ap.add_argument("--heavy-runs", type=int, default=None,
                    help="runs of memory and many-nodes (default 3; quick 1)")
    ap.add_argument("--reliability-runs", type=int, default=1,
                    help="runs of reliability (each is 10 rounds; default 1)")
    ap.add_argument("--timeout-scale", type=float, default=1.0,
                    help="multiply every per-run hard timeout by this")
    ap.add_argument("--set", action="append", default=[], metavar="WORKLOAD.PARAM=VALUE",
                    help="override a workload parameter, e.g. --set tiny.jobs=2000")
    ap.add_argument("--json", default=None,
                    help="where to write the results (default benchmarks/results.json; "
                         "quick: benchmarks/results-quick.json)")
    ap.add_argument("--reinstall", action="store_true",
                    help="recreate the peer systems' venvs under benchmarks/.envs")
    ap.add_argument("--setup-only", action="store_true", help="only create the venvs")
    args = ap.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for s in args.systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    for w in args.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    if args.runs is None:
        args.runs = 1 if args.quick else 5
    if args.heavy_runs is None:
        args.heavy_runs = 1 if args.quick else 3
    if args.json is None:
        args.json = str(HERE / ("results-quick.json" if args.quick else "results.json"))
    return args


def workload_params(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    base = QUICK if args.quick else FULL
    params = {w: {**base[w], "stall": 20.0 if args.quick else 60.0} for w in WORKLOADS}
    for item in args.set:
        key, _, value = item.partition("=")
        w, _, name = key.partition(".")
        if w not in params or not name:
            raise SystemExit(f"--set {item!r}: use WORKLOAD.PARAM=VALUE")
        params[w][name] = json.loads(value)
    return params


def runs_of(w: str, args: argparse.Namespace) -> int:
    if w in QUICK_KIND:
        return args.runs
    if w in HEAVY_KIND:
        return args.heavy_runs
    return args.reliability_runs


# ---- one run ----------------------------------------------------------------------------


def run_one(system: str, python: Path, workload: str, params: dict, timeout: float,
            logs: Path, pythonpath: str | None = None) -> dict[str, Any]:
    """Run one driver in a fresh session; always kill everything it started.
    ``pythonpath``: run this project from another source tree (ab.py)."""
    tag = uuid.uuid4().hex
    workdir = Path(tempfile.mkdtemp(prefix=f"db-{system}-"))
    env = {**os.environ, TAG_VAR: tag, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    argv = [str(python), str(HERE / "systems" / DRIVERS[system]), "--workload", workload,
            "--params", json.dumps(params), "--workdir", str(workdir),
            "--deadline", str(timeout + 60)]
    out_path, err_path = workdir / "driver.out", workdir / "driver.err"
    t0 = time.monotonic()
    timed_out = False
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    cwd=workdir, env=env, start_new_session=True)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                kill_tagged(tag)
    except BaseException:  # interrupted: the run's processes are dead; drop its files too
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    wall = time.monotonic() - t0
    record = None
    for line in out_path.read_text(errors="replace").splitlines():
        if line.startswith(RESULT_PREFIX):
            record = json.loads(line[len(RESULT_PREFIX):])
    if record is None:
        record = {"system": system, "workload": workload, "params": params}
        if timed_out:
            record.update(status="hung", reason=f"no result within the {timeout:.0f} s limit")
        else:
            record.update(status="failed", reason=f"driver exited {proc.returncode} "
                                                  "without a result")
    record["run_wall_s"] = round(wall, 2)
    counts = record.get("counts", {})
    if record.get("status") in ("errors", "hung") and not record.get("reason") and counts:
        record["reason"] = ", ".join(f"{n} {k}" for k, n in counts.items() if k != "ok" and n) \
            + f" of {sum(counts.values())} jobs"
    if record.get("status") not in ("ok", "skipped"):
        keep = logs / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{system}-{workload}"
        shutil.copytree(workdir, keep, ignore=shutil.ignore_patterns("*.sock", "sockets"),
                        dirs_exist_ok=True)
        record["logs"] = str(keep.relative_to(HERE.parent))
        record["stderr_tail"] = err_path.read_text(errors="replace")[-1500:]
    shutil.rmtree(workdir, ignore_errors=True)
    return record


# ---- summary ----------------------------------------------------------------------------


def summarize(records: list[dict], systems: list[str], workloads: list[str]) -> dict:
    summary: dict[str, Any] = {}
    for w in workloads:
        entry: dict[str, Any] = {"status": {}, "metrics": {}}
        for s in systems:
            recs = [r for r in records if r["workload"] == w and r.get("system") == s]
            if not recs:
                continue
            st: dict[str, Any] = {}
            for r in recs:
                st[r["status"]] = st.get(r["status"], 0) + 1
            reasons = sorted({r["reason"] for r in recs if r.get("reason")})
            if reasons:
                st["reasons"] = reasons
            entry["status"][s] = st
        for metric, better in METRICS[w]:
            per: dict[str, Any] = {}
            for s in systems:
                # a hung run's speed is meaningless; reliability counts what hung
                vals = [r["metrics"][metric] for r in records
                        if r["workload"] == w and r.get("system") == s
                        and metric in r.get("metrics", {})
                        and (r["status"] != "hung" or w == "reliability")]
                if vals:
                    per[s] = {"median": statistics.median(vals), "min": min(vals),
                              "max": max(vals), "n": len(vals)}
            ours = per.get("ours", {}).get("median")
            for v in per.values():
                v["ratio_to_ours"] = (v["median"] / ours) if ours else None
            if per:
                entry["metrics"][metric] = {"better": better, "systems": per}
        summary[w] = entry
    return summary


def _med(summary: dict, w: str, metric: str, s: str) -> float | None:
    return summary.get(w, {}).get("metrics", {}).get(metric, {}).get("systems", {}) \
        .get(s, {}).get("median")


def targets(summary: dict) -> list[dict[str, Any]]:
    """The targets of issue 7, each with the figures it compares and whether it is met."""
    out = []

    def add(name: str, value: float | None, goal: str, met: bool | None) -> None:
        out.append({"target": name, "value": value, "goal": goal, "met": met})

    def ratio(w: str, m: str, a: str, b: str) -> float | None:
        x, y = _med(summary, w, m, a), _med(summary, w, m, b)
        return x / y if x is not None and y else None

    for peer, goal in (("pool", 0.4), ("orig", 10.0), ("ray", 2.5)):
        r = ratio("tiny", "jobs_per_s", "ours", peer)
        add(f"tiny: ours / {peer} jobs/s", r, f">= {goal}", None if r is None else r >= goal)
    r = ratio("tiny", "jobs_per_s", "shared", "ours")
    add("tiny: shared (dispyscheduler) / ours direct jobs/s", r, ">= 0.6",
        None if r is None else r >= 0.6)
    r = ratio("latency", "p50_ms", "ours", "pool")
    add("latency p50: ours / pool", r, "<= 4", None if r is None else r <= 4)
    r = ratio("latency", "p50_ms", "ours", "orig")
    add("latency p50: ours / orig", r, "<= 0.2", None if r is None else r <= 0.2)
    a, b = _med(summary, "cpu", "efficiency", "ours"), _med(summary, "cpu", "efficiency", "pool")
    d = None if a is None or b is None else b - a
    add("cpu efficiency: pool - ours", d, "<= 0.03", None if d is None else d <= 0.03)
    r = ratio("payload", "mb_per_s", "ours", "pool")
    add("payload: ours / pool MB/s", r, ">= 0.8", None if r is None else r >= 0.8)
    r = ratio("memory", "bytes_per_job", "ours", "orig")
    add("memory: ours / orig bytes per job", r, "<= 0.5", None if r is None else r <= 0.5)
    a = _med(summary, "many-nodes", "client_cpu_us_per_job", "ours")
    b = _med(summary, "many-nodes-2", "client_cpu_us_per_job", "ours")
    r = a / b if a is not None and b else None
    add("many-nodes: ours CPU/job 20 nodes / 2 nodes", r, "<= 1.25 (does not grow)",
        None if r is None else r <= 1.25)
    lost = _med(summary, "reliability", "lost", "ours")
    stuck = _med(summary, "reliability", "stuck", "ours")
    st = summary.get("reliability", {}).get("status", {}).get("ours", {})
    bad = any(k in st for k in ("hung", "failed"))
    val = None if lost is None or stuck is None else lost + stuck
    add("reliability: ours lost + stuck", val, "== 0",
        None if val is None and not bad else (not bad and val == 0))
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _runs(st: dict) -> str:
    if not st:
        return ""
    parts = [f"{n} {k}" for k, n in st.items() if k != "reasons"]
    return ", ".join(parts)


def table(summary: dict, systems: list[str]) -> str:
    head = ("workload", "metric", "better", "system", "median", "min..max", "x ours", "runs")
    rows: list[tuple[str, ...]] = [head]
    notes: list[str] = []
    for w, entry in summary.items():
        first = True
        shown: set[str] = set()
        for metric, m in entry["metrics"].items():
            new_metric = True
            for s in systems:
                v = m["systems"].get(s)
                if v is None:
                    continue
                ratio = v["ratio_to_ours"]
                rows.append((w if first else "", metric if new_metric else "",
                             m["better"] if new_metric else "", s, _fmt(v["median"]),
                             f"{_fmt(v['min'])}..{_fmt(v['max'])}",
                             "-" if ratio is None else f"{ratio:.2f}",
                             "" if s in shown else _runs(entry["status"].get(s, {}))))
                shown.add(s)
                first = new_metric = False
        for s in systems:
            st = entry["status"].get(s)
            if st and s not in shown:
                rows.append((w if first else "", "-", "", s, "-", "", "", _runs(st)))
                first = False
            for reason in (st or {}).get("reasons", []):
                notes.append(f"{w} / {s}: {reason}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    if notes:
        lines += ["", "notes:"] + [f"  {n}" for n in notes]
    return "\n".join(lines)


def targets_text(tgts: list[dict]) -> str:
    lines = ["targets (issue 7):"]
    for t in tgts:
        met = {True: "met", False: "MISSED", None: "no data"}[t["met"]]
        lines.append(f"  {t['target']:<46} {_fmt(t['value']):>8}  goal {t['goal']:<24} {met}")
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        info["loadavg_at_start"] = os.getloadavg()
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = workload_params(args)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind, so every run's cleanup runs
        signal.signal(sig, lambda num, _frame: sys.exit(128 + num))
    logs = HERE / ".logs"
    logs.mkdir(exist_ok=True)
    pythons: dict[str, Path] = {}
    unavailable: dict[str, str] = {}
    for s in args.systems:
        env = envs.ensure(s, reinstall=args.reinstall)
        if env.python is None:
            unavailable[s] = env.reason
            print(f"[setup] {s}: skipped: {env.reason}", flush=True)
        else:
            pythons[s] = env.python
    if args.setup_only:
        return 0
    started = dt.datetime.now(dt.timezone.utc)
    records: list[dict] = []
    skipped: dict[tuple[str, str], bool] = {}
    active = [s for s in args.systems if s in pythons]
    for w in args.workloads:
        timeout = (QUICK_TIMEOUTS if args.quick else TIMEOUTS)[w] * args.timeout_scale
        for r in range(runs_of(w, args)):
            order = active[r % len(active):] + active[:r % len(active)] if active else []
            for s in order:
                if skipped.get((w, s)):
                    continue
                rec = run_one(s, pythons[s], w, params[w], timeout, logs)
                rec["run"] = r + 1
                records.append(rec)
                if rec["status"] == "skipped":
                    skipped[(w, s)] = True
                shown = ", ".join(f"{k}={_fmt(v)}" for k, v in rec.get("metrics", {}).items())
                why = f" ({rec['reason']})" if rec.get("reason") else ""
                print(f"[{w} {r + 1}/{runs_of(w, args)}] {s:<5} {rec['status']:<7} "
                      f"{shown}{why} [{rec['run_wall_s']} s]", flush=True)
    for s, reason in unavailable.items():
        for w in args.workloads:
            records.append({"system": s, "workload": w, "status": "skipped", "reason": reason})
    summary = summarize(records, args.systems, args.workloads)
    tgts = targets(summary)
    versions = {r["system"]: r["version"] for r in records if r.get("version")}
    text = table(summary, args.systems)
    print()
    print(f"dispy benchmarks, {started:%Y-%m-%d %H:%M} UTC, {machine()['cores']} cores, "
          f"Python {platform.python_version()}, {'quick' if args.quick else 'full'} mode")
    print("systems: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
    print("x ours = system's median / ours' median (see 'better' for the direction)")
    print()
    print(text)
    print()
    print(targets_text(tgts))
    result = {
        "date": started.isoformat(timespec="seconds"), "machine": machine(),
        "mode": "quick" if args.quick else "full", "command": " ".join(sys.argv),
        "versions": versions, "params": {w: params[w] for w in args.workloads},
        "runs": {w: runs_of(w, args) for w in args.workloads},
        "summary": summary, "targets": tgts, "records": records,
    }
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
