"""Shared by every system driver: processes, ports, the workloads and the result line.

Stdlib only: each driver runs in its own venv (ours, the original dispy, Dask, Ray).
A driver runs ONE workload once and prints one line ``BENCH-RESULT {json}`` on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "
TAG_VAR = "DISPY_BENCH_TAG"
SYSTEMS_DIR = Path(__file__).resolve().parent


class Skip(Exception):
    """This workload does not apply to this system (the message says why)."""


# ---- processes --------------------------------------------------------------------------


def ensure_tag() -> str:
    """The marker every process of this run inherits in its environment (for the sweep)."""
    tag = os.environ.get(TAG_VAR)
    if not tag:
        tag = uuid.uuid4().hex
        os.environ[TAG_VAR] = tag
    return tag


def tagged_pids(tag: str, exclude: Sequence[int] = (), var: str = TAG_VAR) -> list[int]:
    """Processes whose environment carries ``var=tag`` (in any session or group)."""
    needle = f"{var}={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_tagged(tag: str, exclude: Sequence[int] = (), timeout: float = 10.0,
                var: str = TAG_VAR) -> int:
    """SIGKILL every process carrying ``var=tag`` (but not ``exclude``); returns how many."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = tagged_pids(tag, exclude, var)
        alive = [p for p in pids if not _is_zombie(p)]
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return len(killed)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def ancestors(pid: int | None = None) -> list[int]:
    """``pid`` (default: this process) and its parents up to init."""
    pid = os.getpid() if pid is None else pid
    chain = []
    while pid > 1:
        chain.append(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                pid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return chain


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def free_port(host: str = "127.0.0.1", span: int = 1, taken: set[int] | None = None) -> int:
    """A port P such that P..P+span-1 are free for TCP and UDP on ``host``."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port + span > 65535 or any(p in taken for p in range(port, port + span)):
            continue
        if all(_port_free(host, p) for p in range(port, port + span)):
            taken.update(range(port, port + span))
            return port
    raise RuntimeError("no free port found")


def _port_free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


class Procs:
    """Daemons a driver starts; each in its own session, all killed by ``stop_all``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, argv: list[str], name: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **(env or {})}, cwd=cwd or self.workdir)
        self.procs.append((proc, log))
        return proc, log

    def wait_for(self, proc: subprocess.Popen, log: Path, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in log.read_text(errors="replace"):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{log.name}: never logged {text!r} (exit {proc.poll()}):\n{tail}")

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            self.stop(proc)
        self.procs.clear()


# ---- the system interface ---------------------------------------------------------------


class Adapter:
    """What a driver implements for its system. Handles are the system's job objects."""

    name = "?"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs = Procs(workdir)

    def version(self) -> str:
        raise NotImplementedError

    def start_nodes(self, cpus: list[int]) -> None:
        """Start the compute side: one node per entry, with that many CPUs."""
        raise NotImplementedError

    def open(self, fn: Callable) -> None:
        """Client side: connect / create the cluster for computation ``fn``."""
        raise NotImplementedError

    def wait_ready(self, nodes: int, cpus: int, timeout: float) -> None:
        """Block until the client sees ``nodes`` nodes / ``cpus`` CPUs (default: no-op)."""

    def submit(self, *args: Any) -> Any:
        raise NotImplementedError

    def wait(self, handle: Any, timeout: float | None) -> bool:
        """True once the job ended (any way); False if ``timeout`` passed first."""
        raise NotImplementedError

    def outcome(self, handle: Any) -> tuple[bool, Any]:
        """(ended successfully, result) of an ended job."""
        raise NotImplementedError

    def program_source(self) -> str:
        """A user's whole one-job program for the nodes started (``program``): it
        prints ``result 7`` and exits."""
        raise Skip("no program for this system")

    def gather(self, handles: list) -> list | None:
        """All results at once if the system has an idiomatic way; None: wait one by one."""
        return None

    def scheduler_cpu(self) -> float | None:
        """CPU seconds used so far by a separate scheduler process, if the system has one."""
        return None

    def close(self) -> None:
        """Release the client side (not timed)."""

    def shutdown(self) -> None:
        """Stop everything this adapter started."""
        self.procs.stop_all()


# ---- collecting results -----------------------------------------------------------------


def collect(sys_: Adapter, handles: list, expect: Callable[[int, Any], bool],
            stall: float, try_gather: bool = True) -> dict[str, Any]:
    """Wait for every job; a job not done ``stall`` s after the last progress is stuck.

    Returns counts: ok, failed (ended without a result / with an error), wrong (result not
    the expected one), stuck (not ended).
    """
    counts = {"ok": 0, "failed": 0, "wrong": 0, "stuck": 0}
    if try_gather:
        try:
            results = sys_.gather(handles)
        except Exception:  # an error in one job: fall back to one-by-one accounting
            results = None
        if results is not None:
            for i, res in enumerate(results):
                counts["ok" if expect(i, res) else "wrong"] += 1
            return counts
    stalled = False
    for i, h in enumerate(handles):
        if not sys_.wait(h, 0.0 if stalled else stall):
            counts["stuck"] += 1
            stalled = True
            continue
        ok, res = sys_.outcome(h)
        if not ok:
            counts["failed"] += 1
        elif not expect(i, res):
            counts["wrong"] += 1
        else:
            counts["ok"] += 1
    return counts


def _status(counts: dict[str, int]) -> str:
    if counts["stuck"]:
        return "hung"
    if counts["failed"] or counts["wrong"]:
        return "errors"
    return "ok"


def _same(i: int, res: Any) -> bool:
    return res == i


def _warm(sys_: Adapter, stall: float) -> None:
    h = sys_.submit(-1)
    if not sys_.wait(h, stall):
        raise RuntimeError(f"warm-up job did not finish in {stall} s")
    ok, res = sys_.outcome(h)
    if not ok or res != -1:
        raise RuntimeError(f"warm-up job failed: {res!r}")


# ---- workloads --------------------------------------------------------------------------
# Each returns {"status": ..., "metrics": {...}, "counts": {...}}.


def w_tiny(sys_: Adapter, p: dict, jobfns: Any) -> dict:
    sys_.start_nodes([p["cpus"]])
    sys_.open(jobfns.noop)
    sys_.wait_ready(1, p["cpus"], p["stall"])
    _warm(sys_, p["stall"])
    n = p["jobs"]
    t0 = time.perf_counter()
    handles = [sys_.submit(i) for i in range(n)]
    t_sub = time.perf_counter() - t0
    counts = collect(sys_, handles, _same, p["stall"])
    elapsed = time.perf_counter() - t0
    return {"status": _status(counts), "counts": counts,
            "metrics": {"jobs_per_s": n / elapsed, "submit_s": t_sub, "total_s": elapsed}}


def w_latency(sys_: Adapter, p: dict, jobfns: Any) -> dict:
    sys_.start_nodes([p["cpus"]])
    sys_.open(jobfns.noop)
    sys_.wait_ready(1, p["cpus"], p["stall"])
    for _ in range(5):
        _warm(sys_, p["stall"])
    # what a system does once after its start runs before the clock, not beside the
    # measured jobs (ours starts its next spare computation host after the first job:
    # on a 2-vCPU VM that busy vCPU made our round trips 13-39 % faster, RESULTS.md)
    time.sleep(p.get("quiet", 0.0))
    times = []
    counts = {"ok": 0, "failed": 0, "wrong": 0, "stuck": 0}
    for i in range(p["jobs"]):
        t0 = time.perf_counter()
        h = sys_.submit(i)
        if not sys_.wait(h, p["stall"]):
            counts["stuck"] += 1
            break
        times.append(time.perf_counter() - t0)
        ok, res = sys_.outcome(h)
        counts["ok" if ok and res == i else "failed"] += 1
    times.sort()
    metrics = {}
    if times:
        metrics = {"p50_ms": 1000 * statistics.median(times),
                   "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
                   "mean_ms": 1000 * statistics.fmean(times)}
    return {"status": _status(counts), "counts": counts, "metrics": metrics}


def calibrate_busy(busy: Callable[[int], int], job_ms: float) -> tuple[int, float]:
    """Iterations for a ``job_ms`` busy loop here, and the measured seconds per job."""
    n = 200_000
    while _timed(busy, n) < 0.02:
        n *= 4
    dt = min(_timed(busy, n) for _ in range(5))  # the least disturbed of a few tries
    iters = int(n * job_ms / 1000 / dt)
    best = min(_timed(busy, iters) for _ in range(3))
    return iters, best


def _timed(fn: Callable[[int], int], arg: int) -> float:
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def w_cpu(sys_: Adapter, p: dict, jobfns: Any) -> dict:
    """Efficiency = CPU time the jobs themselves used / (CPUs x wall time).

    Each job measures its own CPU time, so a noisy calibration cannot skew the figure,
    while time the system's own processes take from the jobs' CPUs still lowers it.
    """
    sys_.start_nodes([p["cpus"]])
    sys_.open(jobfns.busy)
    sys_.wait_ready(1, p["cpus"], p["stall"])
    iters, job_s = calibrate_busy(lambda k: jobfns.busy(k)[0], p["job_ms"])
    h = sys_.submit(1000)
    sys_.wait(h, p["stall"])
    n = p["jobs"]
    want = iters * (iters - 1) // 2
    cpu: list[float] = []

    def expect(_i: int, r: Any) -> bool:
        if isinstance(r, (tuple, list)) and len(r) == 2 and r[0] == want:
            cpu.append(float(r[1]))
            return True
        return False

    t0 = time.perf_counter()
    handles = [sys_.submit(iters) for _ in range(n)]
    counts = collect(sys_, handles, expect, p["stall"] + 10 * job_s)
    wall = time.perf_counter() - t0
    eff = sum(cpu) / (p["cpus"] * wall)
    return {"status": _status(counts), "counts": counts,
            "metrics": {"efficiency": eff, "wall_s": wall, "job_cpu_s": statistics.fmean(cpu)
                        if cpu else 0.0, "calibrated_job_s": job_s, "iters": iters}}


def w_payload(sys_: Adapter, p: dict, jobfns: Any) -> dict:
    sys_.start_nodes([p["cpus"]])
    sys_.open(jobfns.echo)
    sys_.wait_ready(1, p["cpus"], p["stall"])
    h = sys_.submit(b"x")
    sys_.wait(h, p["stall"])
    size = int(p["mb"] * 1_000_000)
    data = os.urandom(size)
    head, tail = data[:64], data[-64:]
    n = p["jobs"]

    def expect(_i: int, res: Any) -> bool:
        return isinstance(res, (bytes, bytearray, memoryview)) and len(res) == size \
            and bytes(res[:64]) == head and bytes(res[-64:]) == tail

    t0 = time.perf_counter()
    handles = [sys_.submit(data) for _ in range(n)]
    counts = collect(sys_, handles, expect, p["stall"])
    wall = time.perf_counter() - t0
    moved = 2 * n * size / 1e6
    return {"status": _status(counts), "counts": counts,
            "metrics": {"mb_per_s": moved / wall, "wall_s": wall}}


def w_startup(sys_: Adapter, p: dict, jobfns: Any) -> dict:
    sys_.start_nodes([p["cpus"]])
    time.sleep(p.get("settle", 1.0))  # the node is up and idle before the clock starts
    t0 = time.perf_counter()
    sys_.open(jobfns.noop)
    h = sys_.submit(7)
    done = sys_.wait(h, p["stall"])
    elapsed = time.perf_counter() - t0
    ok, res = sys_.outcome(h) if done else (False, None)
    counts = {"ok": int(ok and res == 7), "failed": int(done and not ok),
              "wrong": int(ok and res != 7), "stuck": int(not done)}
    return {"status": _status(counts), "counts": counts,
            "metrics": {"seconds": elapsed} if done else {}}


def w_program(sys_: Adapter, p: dict, jobfns: Any) -> dict:
    """A whole one-job program as ``python prog.py`` runs it: the interpreter's start,
    the import, the cluster, one job and the exit, node already running and idle (what
    ``startup`` leaves out is what a user waits for too). The median of ``programs``
    programs after one untimed one, which writes the ``.pyc`` files (as a user's first
    run does, whatever this shell's PYTHONDONTWRITEBYTECODE) and warms the node."""
    if type(sys_).program_source is Adapter.program_source:
        raise Skip("no program for this system")  # (before starting its nodes)
    sys_.start_nodes([p["cpus"]])
    Path("program.py").write_text(sys_.program_source())  # (the original reads its source)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    time.sleep(p.get("settle", 1.0))
    times: list[float] = []
    counts = {"ok": 0, "failed": 0, "wrong": 0, "stuck": 0}
    for i in range(p.get("programs", 3) + 1):
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "program.py"], capture_output=True,
                                  text=True, timeout=p["program_timeout"], check=False,
                                  env=env)
        except subprocess.TimeoutExpired:
            counts["stuck"] += 1
            continue
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            counts["failed"] += 1
            sys.stderr.write(proc.stderr[-2000:])
        elif proc.stdout.strip().splitlines()[-1:] != ["result 7"]:  # (after any log)
            counts["wrong"] += 1
            sys.stderr.write(f"program printed: {proc.stdout[-2000:]!r}\n")
        else:
            counts["ok"] += 1
            if i:
                times.append(elapsed)
    metrics = {"seconds": statistics.median(times)} if times else {}
    return {"status": _status(counts), "counts": counts, "metrics": metrics}


def w_memory(sys_: Adapter, p: dict, jobfns: Any) -> dict:
    sys_.start_nodes([p["cpus"]])
    sys_.open(jobfns.noop)
    sys_.wait_ready(1, p["cpus"], p["stall"])
    _warm(sys_, p["stall"])
    n = p["jobs"]
    args = list(range(n))  # allocated before the baseline: only the systems' cost counts
    before = rss_bytes()
    t0 = time.perf_counter()
    handles = [sys_.submit(x) for x in args]
    t_sub = time.perf_counter() - t0
    after = rss_bytes()
    del handles  # not waited: the driver exits without waiting (too slow for some systems)
    return {"status": "ok", "counts": {"ok": n, "failed": 0, "wrong": 0, "stuck": 0},
            "metrics": {"bytes_per_job": (after - before) / n, "rss_growth_mb": (after - before)
                        / 1e6, "submit_s": t_sub}, "no_close": True}


def w_many_nodes(sys_: Adapter, p: dict, jobfns: Any) -> dict:
    nodes = p["nodes"]
    sys_.start_nodes([1] * nodes)
    sys_.open(jobfns.noop)
    sys_.wait_ready(nodes, nodes, p["ready_timeout"])
    for _ in range(nodes):
        _warm(sys_, p["stall"])
    n = p["jobs"]
    sched0 = sys_.scheduler_cpu()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    handles = [sys_.submit(i) for i in range(n)]
    counts = collect(sys_, handles, _same, p["stall"])
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    metrics = {"jobs_per_s": n / elapsed, "client_cpu_us_per_job": 1e6 * cpu / n}
    if sched0 is not None:
        sched = (sys_.scheduler_cpu() or 0.0) - sched0
        metrics["scheduler_cpu_us_per_job"] = 1e6 * sched / n
    return {"status": _status(counts), "counts": counts, "metrics": metrics}


def w_reliability(sys_: Adapter, p: dict, jobfns: Any) -> dict:
    sys_.start_nodes([p["cpus"]])
    sys_.open(jobfns.noop)
    sys_.wait_ready(1, p["cpus"], p["stall"])
    _warm(sys_, p["stall"])
    total = {"ok": 0, "failed": 0, "wrong": 0, "stuck": 0}
    rounds = []
    t0 = time.perf_counter()
    for r in range(p["rounds"]):
        base = r * p["jobs"]
        tr = time.perf_counter()
        handles = [sys_.submit(base + i) for i in range(p["jobs"])]
        counts = collect(sys_, handles, lambda i, res, b=base: res == b + i,
                         p["job_timeout"], try_gather=False)
        rounds.append({**counts, "seconds": round(time.perf_counter() - tr, 3)})
        for k, v in counts.items():
            total[k] += v
    elapsed = time.perf_counter() - t0
    lost = total["failed"] + total["wrong"]
    n = p["rounds"] * p["jobs"]
    return {"status": _status(total), "counts": total, "rounds": rounds,
            "metrics": {"lost": lost, "stuck": total["stuck"], "jobs_per_s": n / elapsed}}


WORKLOADS: dict[str, Callable[[Adapter, dict, Any], dict]] = {
    "tiny": w_tiny, "latency": w_latency, "cpu": w_cpu, "payload": w_payload,
    "startup": w_startup, "program": w_program, "memory": w_memory, "many-nodes": w_many_nodes,
    "many-nodes-2": w_many_nodes, "reliability": w_reliability,
}


# ---- the driver's main ------------------------------------------------------------------


def emit(record: dict) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(record) + "\n")
    sys.stdout.flush()


def _watchdog(tag: str, seconds: float) -> None:
    """Even if nobody is left to time this driver out, it does not outlive its deadline."""
    time.sleep(seconds)
    sys.stderr.write(f"driver: deadline of {seconds:.0f} s passed; killing the run\n")
    kill_tagged(tag, exclude=ancestors())
    os._exit(124)


def driver_main(make: Callable[[Path], Adapter]) -> None:
    """Run one workload on the system ``make`` builds; print the result; exit hard."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--params", default="{}", help="workload parameters as JSON")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds after which the driver kills what it started and exits")
    args = ap.parse_args()
    tag = ensure_tag()
    if args.deadline:
        threading.Thread(target=_watchdog, args=(tag, args.deadline), daemon=True).start()
    workdir = Path(args.workdir or os.getcwd()).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    params = {"cpus": 2, "stall": 60.0, **json.loads(args.params)}
    sys.path.insert(0, str(SYSTEMS_DIR))
    import jobfns  # noqa: PLC0415  (after sys.path is set)

    record: dict[str, Any] = {"workload": args.workload, "params": params}
    sys_ = None
    code = 0
    try:
        sys_ = make(workdir)
        record["system"] = sys_.name
        record["version"] = sys_.version()
        record.update(WORKLOADS[args.workload](sys_, params, jobfns))
        if not record.pop("no_close", False):
            sys_.close()
    except Skip as exc:
        record.update(status="skipped", reason=str(exc))
    except Exception as exc:  # report it as data; the orchestrator prints the reason
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc()[-3000:])
        code = 1
    finally:
        emit(record)
        try:
            if sys_ is not None:
                sys_.shutdown()
        finally:
            kill_tagged(tag, exclude=ancestors())
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
