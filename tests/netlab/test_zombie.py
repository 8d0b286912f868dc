"""A client machine that vanishes without a word (cable cut, then its processes die):
the node notices it by TCP keepalive, lets its running job finish, then frees itself
for another client after --zombie_interval."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .conftest import DispyLan
from .lab import netlab_available

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(120)]

_reason = netlab_available()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=_reason))

CLIENT = textwrap.dedent("""
    import sys, time, dispy
    def job(path):
        dispy_provisional_result("started")
        while not os.path.exists(path):
            time.sleep(0.02)
        return dispy_node_name
    c = dispy.JobCluster(job, nodes=[sys.argv[1]], node_port=int(sys.argv[2]))
    j = c.submit(sys.argv[3])
    while j.status not in (dispy.DispyJob.ProvisionalResult, dispy.DispyJob.Finished):
        time.sleep(0.02)
    print("started", flush=True)
    print("RESULT", j(), flush=True)
    c.close()
""")


def test_vanished_client_machine_is_a_zombie(dispy_lan_idle: DispyLan) -> None:
    lan = dispy_lan_idle
    node = lan.start_node("node1", "--name", "node1", "--zombie_interval", "0.02")
    script = lan.workdir / "client.py"
    script.write_text(CLIENT)
    go = lan.workdir / "go"
    argv = [sys.executable, str(script), node.ip, str(lan.port), str(go)]
    proc = lan.client.popen(argv, stdout=subprocess.PIPE, text=True, cwd=lan.workdir,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "started"
    lan.client.link_down()  # no FIN or RST will ever reach the node...
    lan.client.kill_all()  # ...from a client that is gone
    proc.wait()
    proc.stdout.close()
    node.wait_for("the node is freed after its 1 running job(s) finish", timeout=60)
    go.touch()  # the zombie's job runs to its end
    node.wait_for("releasing the node", timeout=60)
    other = lan.nodes["node2"].host  # another machine's client gets the node
    res = other.run(argv, capture_output=True, text=True, timeout=60, cwd=lan.workdir)
    assert "RESULT node1" in res.stdout, res.stdout + res.stderr
