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


BIG_CLIENT = textwrap.dedent("""
    import sys, dispy
    def job(n):
        return b"r" * n
    c = dispy.JobCluster(job, nodes=[sys.argv[1]], node_port=int(sys.argv[2]))
    result = c.submit(int(sys.argv[3]))()
    print("RESULT", len(result) if result is not None else None, flush=True)
    c.close()
""")


def test_client_reading_a_slow_big_result_is_alive(dispy_lan_idle: DispyLan) -> None:
    """A pulse waits behind a big result on a slow link, so the client cannot answer
    it for longer than --zombie_interval: while it takes the result in, it is alive,
    not a zombie (the node would close its connection in the middle)."""
    lan = dispy_lan_idle
    node = lan.start_node("node1", "--zombie_interval", "0.02", "--msg_timeout", "1")
    # 24 MB at 20 Mbit/s: about 10 s, five times the 2 s a silent client would get
    node.host.run(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "20mbit",
                   "burst", "64kb", "latency", "2000ms"], check=True, timeout=30)
    script = lan.workdir / "big_client.py"
    script.write_text(BIG_CLIENT)
    size = 24 << 20
    res = lan.client.run([sys.executable, str(script), node.ip, str(lan.port), str(size)],
                         capture_output=True, text=True, timeout=90, cwd=lan.workdir)
    assert f"RESULT {size}" in res.stdout, res.stdout + res.stderr + node.output()
    assert "presumed gone" not in node.output(), node.output()
