"""Everything still works on asyncio's own loop (``DISPY_EVENT_LOOP=asyncio``): where
uvloop is not installed (Windows) or ruled out. The suite runs on uvloop otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)

PROGRAM = """
import asyncio, sys
import dispy
from dispy.client.engine import Engine

def square(n):
    return n * n

node_port, sched_port = int(sys.argv[1]), int(sys.argv[2])
with dispy.JobCluster(square, nodes=["127.0.0.1"], node_port=node_port, port=0) as c:
    assert [j() for j in [c.submit(i) for i in range(50)]] == [i * i for i in range(50)]
    loop = Engine._instance.bridge.loop
    assert type(loop).__module__.startswith("asyncio"), type(loop)
nodes = [dispy.NodeAllocate("127.0.0.1", int(sys.argv[3]))]
with dispy.SharedJobCluster(square, nodes=nodes, scheduler_node="127.0.0.1",
                            scheduler_port=sched_port) as c:
    assert [j() for j in [c.submit(i) for i in range(20)]] == [i * i for i in range(20)]
print("all done")
"""


def test_node_scheduler_and_client_on_asyncio_loop(node_factory, scheduler_factory,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPY_EVENT_LOOP", "asyncio")  # the daemons inherit it
    node = node_factory("-c", "2")
    sched_node = node_factory("-c", "2")
    scheduler = scheduler_factory()
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    done = subprocess.run([sys.executable, str(script), str(node.port), str(scheduler.port),
                           str(sched_node.port)],
                          capture_output=True, text=True, timeout=75)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all done" in done.stdout
