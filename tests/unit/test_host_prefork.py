"""A computation host forks the job processes its ``init`` asks for as soon as setup is
done, after telling the daemon it is ready, without waiting for a ``fork`` request: the
first job of a computation waits for the first of them (node/jobs.py ``prefork``).

Driven in a process of its own (``init`` changes directory and binds builtins), over a
socketpair, with the fork itself recorded instead of made.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

SCRIPT = r"""
import json, socket, sys
import cloudpickle
from dispy.node import host as hostmod
from dispy.wire import hostmsg
from dispy.wire.sync import SyncFrameReader

ours, theirs = socket.socketpair()
host = hostmod.ComputationHost(ours)
events = []


def fork():  # recorded, with whether the daemon could read the ready frame by then
    try:
        told = bool(theirs.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        told = False
    events.append("fork" if told else "fork before ready")


host._fork = fork
init = hostmsg.HostInit(cid="c1", dir=sys.argv[1], jobs_path="/nonexistent", token="t1",
                        node_name="n", node_ip_addr="127.0.0.1", fork=int(sys.argv[2]))
host.init(init, [cloudpickle.dumps({"computation": len})])
reply, _ = SyncFrameReader(theirs).read_frame()
print(json.dumps([reply["op"], *events]))
"""


def _events(tmp_path, fork: int) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "comp"), str(fork)],
                          capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_ready_first_then_the_forks_init_asked_for(tmp_path):
    assert _events(tmp_path, 3) == ["ready", "fork", "fork", "fork"]


def test_no_fork_unless_asked(tmp_path):
    assert _events(tmp_path, 0) == ["ready"]
