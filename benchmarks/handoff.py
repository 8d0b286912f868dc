"""What the program's thread costs a sequential round trip: the two thread hand-overs.

    python benchmarks/handoff.py [--jobs 2000] [--runs 5]

A program submits from its own thread and waits there; the engine runs in a thread of
its own. Each sequential job so crosses threads twice: the submit wakes the engine's
loop (an eventfd), and the result wakes the waiting thread (a futex), which then takes
the GIL from the loop. This runs the same no-op jobs on one dispynode (2 CPUs,
loopback) two ways, alternating in one run:

- ``program``: ``cluster.submit(i)()`` in a loop on the program's thread (the latency
  workload of bench.py);
- ``loop``: each job submitted from the engine's own loop as the previous one ends (the
  loop's own work for a posted submit, without a wake-up: the floor of the rest of
  the path).

The difference is what the hand-overs cost. It also counts the context switches of the
program's thread and of the engine's thread per job (``/proc/self/task``): one wake-up
each way is the least; more are the two threads waiting for the GIL. The ``loop`` mode
wraps ``DispyJob._set_finished`` to chain the jobs (as hops.py wraps its points); the
source tree is not changed. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE / "systems")]

from ours import Ours  # noqa: E402  (bench.py's driver: it starts and stops the node)

import dispy  # noqa: E402
from dispy.client import job as jobmod  # noqa: E402


def noop(x):
    return x


def switches(tid: int) -> int:
    """Voluntary and involuntary context switches of thread ``tid`` so far."""
    total = 0
    with open(f"/proc/self/task/{tid}/status") as fh:
        for line in fh:
            if line.split(":")[0] in ("voluntary_ctxt_switches",
                                      "nonvoluntary_ctxt_switches"):
                total += int(line.split()[-1])
    return total


def on_program(cluster: dispy.JobCluster, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        cluster.submit(i)()
        times.append(time.perf_counter() - t0)
    return times


def on_loop(cluster: dispy.JobCluster, n: int) -> list[float]:
    """Each job submitted on the engine's loop as the previous one ends."""
    bridge = cluster._engine.bridge
    loop = bridge.loop
    times: list[float] = []
    ended = threading.Event()
    began = [0.0]
    original = jobmod.DispyJob._set_finished

    def start() -> None:  # what the loop does for a posted submit, without the wake-up
        began[0] = time.perf_counter()
        job = cluster._make_job((len(times),), {})
        with bridge._inbox_lock:
            bridge._inbox.extend((cluster._submit, job))
        bridge._drain_inbox()

    def finished(job: jobmod.DispyJob) -> None:
        original(job)
        times.append(time.perf_counter() - began[0])
        if len(times) >= n:
            ended.set()
        else:
            loop.call_soon(start)

    jobmod.DispyJob._set_finished = finished  # type: ignore[method-assign]
    try:
        loop.call_soon_threadsafe(start)
        if not ended.wait(120):
            raise SystemExit("handoff: the chained jobs did not end in 120 s")
    finally:
        jobmod.DispyJob._set_finished = original  # type: ignore[method-assign]
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dispy-handoff-"))
    system = Ours(work)
    try:
        system.start_nodes([2])
        cluster = dispy.JobCluster(noop, nodes=[("127.0.0.1", p) for p in system.ports],
                                   port=0, recover_file=str(work / "recover"),
                                   loglevel=dispy.logger.WARNING)
        try:
            if cluster.wait_nodes(1, timeout=60) < 1:
                raise SystemExit("the node did not come up")
            for i in range(50):
                cluster.submit(i)()
            engine_tid = cluster._engine.bridge.thread.native_id
            me = threading.get_native_id()
            p50: dict[str, list[float]] = {"program": [], "loop": []}
            cs: dict[str, list[tuple[float, float]]] = {"program": [], "loop": []}
            for r in range(a.runs):
                for mode in (("program", "loop") if r % 2 == 0 else ("loop", "program")):
                    before = switches(me), switches(engine_tid)
                    fn = on_program if mode == "program" else on_loop
                    times = fn(cluster, a.jobs)
                    after = switches(me), switches(engine_tid)
                    p50[mode].append(1000 * statistics.median(times))
                    cs[mode].append(((after[0] - before[0]) / a.jobs,
                                     (after[1] - before[1]) / a.jobs))
        finally:
            cluster.close(timeout=30, terminate=True)
    finally:
        system.shutdown()  # the node's session: daemon and job processes
        shutil.rmtree(work, ignore_errors=True)
    print(f"{a.runs} runs of {a.jobs} sequential no-op jobs each way; medians")
    for mode in ("program", "loop"):
        waits = statistics.median(c[0] for c in cs[mode])
        loops = statistics.median(c[1] for c in cs[mode])
        print(f"  {mode:8} p50 {statistics.median(p50[mode]):.3f} ms   context switches per "
              f"job: program thread {waits:.1f}, engine thread {loops:.1f}   "
              f"(runs: {', '.join(f'{x:.3f}' for x in p50[mode])})")
    cost = statistics.median(p50["program"]) - statistics.median(p50["loop"])
    print(f"  the two hand-overs: {1000 * cost:.0f} us per job")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
