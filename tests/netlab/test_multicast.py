"""Discovery by the IPv4 multicast group (ipv4_udp_multicast) on a LAN that drops every
broadcast, so nothing is found unless requests and announcements both use multicast."""

from __future__ import annotations

import json

import pytest

from .conftest import DispyLan
from .lab import Host, Lab, netlab_available
from .test_ipv6 import admin_sees
from .test_shared import Scheduler, finish, start_client

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(120)]

_reason = netlab_available()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=_reason))

CLIENT = "discovery_client.py"


def drop_broadcasts(host: Host) -> None:
    host.run(["iptables", "-A", "INPUT", "-m", "pkttype", "--pkt-type", "broadcast", "-j",
              "DROP"], check=True, timeout=30)


def test_multicast_requests_and_announcements(dispy_lan_idle: DispyLan) -> None:
    lan = dispy_lan_idle
    for host in (lan.client, *(n.host for n in lan.nodes.values())):
        drop_broadcasts(host)
    node1, node2 = lan.nodes["node1"], lan.nodes["node2"]
    node1.start("--ipv4_udp_multicast")
    # control: the same client asking by broadcast finds nothing on this LAN
    control = lan.run_client(CLIENT, "--nodes", json.dumps(["*"]), "--node-port",
                             str(lan.port), "--jobs", "1", "--wait-nodes", "1",
                             "--deadline", "6")
    assert control.report is not None and control.report["nodes_before_submit"] == [], \
        lan.diagnostics()
    # by multicast: node1 answers the request; node2, started late, is heard by its
    # own multicast announcement
    proc, out, err = lan.start_until_submitted(
        "mc", "--nodes", json.dumps(["*"]), "--node-port", str(lan.port), "--jobs", "8",
        "--wait-nodes", "1", "--multicast", "--until-ip", node2.ip, "--deadline", "45")
    node2.start("--ipv4_udp_multicast")
    proc.wait(timeout=90)
    text = out.read_text()
    detail = f"{text}\n{err.read_text()}\n{lan.node_logs()}"
    assert '"nodes_before_submit": ["' + node1.ip + '"]' in text, detail
    assert "late_node_used" in text, detail


def test_scheduler_finds_nodes_by_multicast(dispy_lan_idle: DispyLan, tmp_path) -> None:
    """dispyscheduler --ipv4_udp_multicast on a LAN without broadcasts."""
    lan = dispy_lan_idle
    for host in (lan.client, *(n.host for n in lan.nodes.values())):
        drop_broadcasts(host)
    for node in lan.nodes.values():
        node.start("--ipv4_udp_multicast")
    sched_host = lan.lab.add_host("sched")
    drop_broadcasts(sched_host)
    sched = Scheduler(lan, tmp_path, "--ipv4_udp_multicast", host=sched_host)
    proc = start_client(lan, sched, "--jobs", "8", "--wait-nodes", "2", "--nodes", "*")
    report = finish(proc, sched)
    assert {j["result"][2] for j in report["jobs"]} == {n.ip for n in lan.nodes.values()}


def test_relay_re_sends_by_multicast(tmp_path) -> None:
    """dispynetrelay --ipv4_udp_multicast: the nodes' LAN drops broadcasts."""
    from .test_remote import SECRET, RoutedLan

    with Lab() as near, Lab() as far:
        routed = RoutedLan(near, far, near.add_router(far), tmp_path)
        for host in (routed.relay.host, *(n.host for n in routed.lan.nodes.values())):
            drop_broadcasts(host)
        for node in routed.lan.nodes.values():
            node.start("-s", SECRET, "--ipv4_udp_multicast")
        routed.relay.start("-s", SECRET, "--ipv4_udp_multicast")
        report = routed.client_run([routed.relay.host.ip, routed.lan.wildcard], "--secret",
                                   SECRET)
        assert report["nodes_before_submit"] == sorted(n.ip for n in routed.lan.nodes.values()
                                                       ), report["detail"]


def test_dispyadmin_finds_nodes_by_multicast(dispy_lan_idle: DispyLan, tmp_path) -> None:
    lan = dispy_lan_idle
    for host in (lan.client, *(n.host for n in lan.nodes.values())):
        drop_broadcasts(host)
    for node in lan.nodes.values():
        node.start("--ipv4_udp_multicast", "--admin_secret", "adm")
    seen = admin_sees(lan, tmp_path / "admin.log", "--ipv4_udp_multicast")
    assert seen == sorted(n.ip for n in lan.nodes.values())
