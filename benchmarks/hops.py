"""Where a round trip's time goes: one sequential job, hop by hop, across the processes.

    python benchmarks/hops.py [--jobs 3000]

Starts a dispynode (2 CPUs, loopback) and a JobCluster, runs ``--jobs`` no-op jobs one
after the other (submit, then wait), and timestamps each job at the points where it
changes hands: the program's thread, the client's loop, the node daemon, the job
process and back. Every process of the run (the node daemon and the job processes it
forks too) loads a ``sitecustomize`` from a temporary directory that wraps those points
with a clock read (``perf_counter_ns``: one clock for all processes); the source tree
is not changed. Prints the median time of each step of the most common sequence. Jobs go through
dispynode (``DISPY_LANES=0``) unless ``--lanes`` is given.

The wrappers cost about a microsecond per point: the total reads some tens of
microseconds over an untimed round trip. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

#: installed as sitecustomize.py in every process of the run (when DISPY_HOPS is set)
SITE = textwrap.dedent('''
    import atexit, os, time
    OUT = os.environ.get("DISPY_HOPS")
    EVENTS = []

    def mark(tag):
        EVENTS.append((time.perf_counter_ns(), tag))
        if len(EVENTS) >= 100:  # job processes are killed at the end: no atexit there
            dump()

    def dump():
        if EVENTS:
            with open(os.path.join(OUT, f"{os.getpid()}.txt"), "a") as fh:
                fh.write("".join(f"{t} {os.getpid()} {g}\\n" for t, g in EVENTS))
            EVENTS.clear()

    def around(owner, name, before=None, after=None):
        inner = getattr(owner, name)  # AttributeError: a point was renamed; say so

        def wrapper(*args, **kwargs):
            if before:
                mark(before)
            try:
                return inner(*args, **kwargs)
            finally:
                if after:
                    mark(after)
        setattr(owner, name, wrapper)

    if OUT:
        import builtins
        builtins.dispy_hop = mark  # the driver marks the program's own steps
        from dispy.client import job, loopthread
        from dispy.node import jobproc, jobs
        from dispy.wire import connection, hostmsg
        around(connection.Connection, "buffer_updated", before="read")
        around(connection.Connection, "flush", after="written")
        around(loopthread.LoopThread, "_drain_inbox", before="loop takes the submit")
        around(job.DispyJob, "_set_finished", before="result set")
        around(jobs.JobRunner, "job", before="node has the job")
        around(jobs.JobRunner, "_job_done", before="node has the result")
        around(hostmsg, "parse_job_request", before="job process has the job")
        around(jobproc, "send_frame_sync", before="job ran", after="result sent")
        atexit.register(dump)
        _exit = os._exit

        def exit_after_dump(code):
            dump()
            _exit(code)
        os._exit = exit_after_dump
''')

#: the program: a node, a cluster, sequential no-op jobs (run with DISPY_HOPS set)
DRIVER = textwrap.dedent('''
    import builtins, os, socket, subprocess, sys, tempfile, time
    import dispy

    def noop(x):
        return x

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix = tempfile.mkdtemp(prefix="dispy-hops-node-")
    log = open(os.path.join(prefix, "log"), "w+")
    node = subprocess.Popen([sys.executable, "-m", "dispy.dispynode", "-c", "2", "-i",
                             "127.0.0.1", "-p", str(port), "--dest_path_prefix", prefix,
                             "--daemon"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            log.seek(0)
            text = log.read()
            if "serving" in text:
                break
            if node.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("dispynode did not start: " + text)
            time.sleep(0.05)
        cluster = dispy.JobCluster(noop, nodes=[("127.0.0.1", port)], port=0,
                                   loglevel=dispy.logger.WARNING)
        if cluster.wait_nodes(1, timeout=60) < 1:
            raise SystemExit("the node did not come up")
        for i in range(50):
            cluster.submit(i)()
        hop = builtins.dispy_hop
        for i in range(int(sys.argv[1])):
            hop("submit")
            job = cluster.submit(i)
            hop("submitted")
            job.finish.wait(30)
            hop("program has the result")
        cluster.close(timeout=30, terminate=True)
    finally:
        node.terminate()
        node.wait(30)
        import shutil
        shutil.rmtree(prefix, ignore_errors=True)
''')


def analyse(out: Path, client_pid: int) -> str:
    events = []
    for path in out.glob("*.txt"):
        for line in path.read_text().splitlines():
            t, pid, tag = line.split(" ", 2)
            events.append((int(t), int(pid), tag))
    events.sort()
    roles = {client_pid: "program"}
    for _, pid, tag in events:
        if tag.startswith("job process") or tag in ("job ran", "result sent"):
            roles.setdefault(pid, "job process")
    for _, pid, _tag in events:
        roles.setdefault(pid, "node daemon")
    cycles, current = [], None
    for t, pid, tag in events:
        step = (roles[pid], tag)
        if tag == "submit":
            current = [(t, step)]
        elif current is not None:
            current.append((t, step))
            if tag == "program has the result":
                cycles.append(current)
                current = None
    cycles = cycles[len(cycles) // 10:]  # the first ones warm up
    if not cycles:
        return "no complete round trip was recorded"
    shapes = collections.Counter(tuple(s for _, s in c) for c in cycles)
    shape, count = shapes.most_common(1)[0]
    same = [c for c in cycles if tuple(s for _, s in c) == shape]
    lines = [f"{count} of {len(cycles)} round trips took this path; medians in us:", ""]
    for i in range(1, len(shape)):
        step = statistics.median((c[i][0] - c[i - 1][0]) / 1000 for c in same)
        (was, a), (now, b) = shape[i - 1], shape[i]
        where = now if was == now else f"{was} -> {now}"
        lines.append(f"{step:8.1f}  {where:28} {a} -> {b}")
    total = statistics.median((c[-1][0] - c[0][0]) / 1000 for c in same)
    lines += ["", f"{total:8.1f}  round trip (with the clock reads)"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--lanes", action="store_true",
                    help="let jobs take lanes (by default they go through dispynode, whose"
                         " steps this shows)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dispy-hops-"))
    try:
        site, out = work / "site", work / "events"
        site.mkdir()
        out.mkdir()
        (site / "sitecustomize.py").write_text(SITE)
        (work / "driver.py").write_text(DRIVER)
        env = {**os.environ, "DISPY_HOPS": str(out),
               "PYTHONPATH": os.pathsep.join([str(site), str(SRC)]),
               "DISPY_LANES": "1" if a.lanes else "0"}
        proc = subprocess.Popen([sys.executable, str(work / "driver.py"), str(a.jobs)],
                                env=env, start_new_session=True)
        try:
            code = proc.wait(600)
        except subprocess.TimeoutExpired:
            print("hops: the run did not end in 600 s", file=sys.stderr)
            code = 1
        finally:  # the driver, its node and the node's children share its session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if code:
            return code
        print(analyse(out, proc.pid))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
