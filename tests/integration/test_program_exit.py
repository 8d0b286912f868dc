"""A program that ends: dispy's engine thread is gone before the interpreter finalizes.

The engine runs uvloop in a daemon thread. Left running at exit, its next timer or
socket event called into an interpreter that was already freed, and the program ended
in SIGSEGV (exit status 139) after its last line, about once in 40 runs of a script
whose node had just died. The deterministic part is checked here: by the time the
program's own exit handlers run, the engine's thread has ended, and a late call to
the cluster fails at once instead of hanging.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)

PROGRAM = textwrap.dedent("""
    import atexit, sys, threading
    import dispy

    def at_exit():  # registered before dispy's own handler, so it runs after it
        alive = [t.name for t in threading.enumerate()
                 if t.name == "dispy-engine" and t.is_alive()]
        try:
            cluster.status()
            late = "answered"
        except RuntimeError as exc:
            late = str(exc)
        print("engine threads at exit:", alive, "| late call:", late, flush=True)

    atexit.register(at_exit)

    def double(x):
        return 2 * x

    cluster = dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=int(sys.argv[1]),
                               port=0)
    print("results", [cluster.submit(i)() for i in range(3)], flush=True)
    # ends without closing the cluster: its timers are still armed
""")


def test_engine_thread_ends_before_the_interpreter(node, tmp_path):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    proc = subprocess.run([sys.executable, str(script), str(node.port)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=45)
    assert proc.returncode == 0, proc.stderr
    assert "results [0, 2, 4]" in proc.stdout
    assert "engine threads at exit: [] | late call: dispy's engine has stopped" \
        in proc.stdout, proc.stdout + proc.stderr
