"""The local path across machines (wire/localpath.py): a program on another host stays
on TCP (it is offered nothing); one on the node's own host takes the local path, also
when it names the node by its LAN address rather than loopback."""

from __future__ import annotations

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
    import socket, sys, dispy
    def double(x):
        return 2 * x
    c = dispy.JobCluster(double, nodes=[sys.argv[1]], node_port=int(sys.argv[2]), port=0,
                         secret="lab-local")
    print("RESULT", c.submit(21)(), flush=True)
    families = {link.conn.get_extra_info("socket").family
                for link in c._engine.links.values() if link.conn is not None}
    print("FAMILY", " ".join(sorted(socket.AddressFamily(f).name for f in families)),
          flush=True)
    c.close()
""")


def test_only_a_program_on_the_node_host_takes_the_local_path(dispy_lan_idle: DispyLan
                                                             ) -> None:
    lan = dispy_lan_idle
    node = lan.start_node("node1", "-s", "lab-local", "-d")
    node.wait_for("local path for clients on this host")
    script = lan.workdir / "client.py"
    script.write_text(CLIENT)
    argv = [sys.executable, str(script), node.ip, str(lan.port)]
    for host, family in ((lan.client, "AF_INET"), (node.host, "AF_UNIX")):
        res = host.run(argv, capture_output=True, text=True, timeout=60, cwd=lan.workdir)
        out = res.stdout + res.stderr
        assert "RESULT 42" in res.stdout, out
        assert f"FAMILY {family}" in res.stdout, out
    handshakes = [ln for ln in node.output().splitlines() if "handshake with" in ln]
    assert len([ln for ln in handshakes if "(local path)" in ln]) == 1, handshakes
    assert any(lan.client.ip in ln and "(local path)" not in ln for ln in handshakes), \
        handshakes
