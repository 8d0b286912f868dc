"""The computation host signals and reaps only the job processes it forked.

Driven through its own request handler (``_daemon_frame``) over a socketpair, in a
process of its own session: whatever pid a request names, nothing but that host's
forked children is ever waited for or killed. (A claim of -1 is asked only while the
host has no child at all, so that even a host without the check could not signal
anything: waitpid(-1) then fails before any kill.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

SCRIPT = r"""
import json, os, socket, subprocess, sys, time
from dispy.node.host import ComputationHost, JobProcess
from dispy.wire.sync import SyncFrameReader, send_frame_sync

ours, theirs = socket.socketpair()
host = ComputationHost(ours)
replies = SyncFrameReader(theirs)

def reap(pid):
    send_frame_sync(theirs, {"op": "reap", "pid": pid})
    host._daemon_frame()
    return replies.read_frame()[0]["reason"]

out = {}
if sys.argv[1] == "childless":
    # (a pid that is not a number gets no answer at all: the host ignores the frame)
    out["claims"] = [reap(pid) for pid in (-1, 0, 999999999)]
else:
    sentinel = subprocess.Popen(["sleep", "30"])  # a child the host did not fork
    out["claims"] = [reap(pid) for pid in (sentinel.pid, 0, -os.getpgid(0))]
    time.sleep(0.1)
    out["sentinel"] = sentinel.poll() is None
    pid = os.fork()  # one the host did fork: reaped as before
    if pid == 0:
        os._exit(3)
    host.procs[pid] = JobProcess(pid, None)
    out["forked"] = reap(pid)
    sentinel.kill()
    sentinel.wait()
print(json.dumps(out))
"""


def drive(mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                          timeout=30, start_new_session=True)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    return json.loads(proc.stdout)


def test_reap_refuses_pids_it_did_not_fork_when_childless():
    out = drive("childless")
    assert out["claims"] == ["not a job process of this computation"] * 3


def test_reap_never_waits_for_or_kills_another_child():
    out = drive("with_sentinel")
    assert out["claims"] == ["not a job process of this computation"] * 3
    assert out["sentinel"] is True
    assert out["forked"] == "job process exited with code 3"
