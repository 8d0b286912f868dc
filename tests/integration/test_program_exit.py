"""A program that ends: dispy's engine thread is gone before the interpreter finalizes.

The engine runs uvloop in a daemon thread. Left running at exit, its next timer or
socket event called into an interpreter that was already freed, and the program ended
in SIGSEGV (exit status 139) after its last line, about once in 50 runs of a script
whose node had just died. The deterministic part is checked here: dispy's exit handler
(registered by ``import dispy``) runs after the program's own, which still find their
cluster working; after it, the engine's thread has ended, a late call to the cluster
fails at once instead of hanging, and no new engine starts.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)

PROGRAM = textwrap.dedent("""
    import atexit, sys, threading

    def last():  # registered before dispy's own handler: runs after it
        alive = [t.name for t in threading.enumerate()
                 if t.name == "dispy-engine" and t.is_alive()]
        try:
            cluster.status()
            late = "answered"
        except RuntimeError as exc:
            late = str(exc)
        try:
            dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=port, port=0)
            new = "a new cluster"
        except RuntimeError as exc:
            new = str(exc)
        print("engine threads at exit:", alive, "| late call:", late, "| new:", new,
              flush=True)

    atexit.register(last)
    import dispy

    def close_it():  # registered before the cluster exists: runs before dispy's
        print("closed", cluster.close(), flush=True)

    atexit.register(close_it)

    def double(x):
        return 2 * x

    port = int(sys.argv[1])
    cluster = dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=port, port=0)
    print("results", [cluster.submit(i)() for i in range(3)], flush=True)
    cluster.submit(3)  # still running, or its result unacked, as the program ends
""")


def test_engine_thread_ends_before_the_interpreter(node, tmp_path):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    proc = subprocess.run([sys.executable, str(script), str(node.port)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=45)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "results [0, 2, 4]" in proc.stdout
    assert "closed True" in proc.stdout, out
    stopped = "dispy's engine has stopped: the program is exiting"
    assert (f"engine threads at exit: [] | late call: {stopped} | new: {stopped}"
            in proc.stdout), out
    assert "Exception ignored" not in proc.stderr, out
