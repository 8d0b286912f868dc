"""The local path (wire/localpath.py): a program on the node's host moves its connection
to the node's abstract Unix socket after the TCP handshake, with the same handshake,
session and sealed frames; anyone else who finds that socket gets nothing from it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from test_tls_key_files import cert_and_key

import dispy
from dispy.wire import localpath
from dispy.wire.handshake import HandshakeError, client_handshake
from dispy.wire.sessions import new_session_key

pytestmark = pytest.mark.timeout(90)

SECRET = "local-sesame"


def where(x):
    import os

    return os.getcwd(), 2 * x


def families(cluster) -> list[int]:
    """The socket family of each of the cluster's node links."""
    return [link.conn.get_extra_info("socket").family
            for link in cluster._engine.links.values() if link.conn is not None]


def local_name(node) -> str:
    """The node's local path, from its debug log."""
    node.wait_for("local path for clients")
    found = re.search(r"local path for clients on this host: @(\S+)", node.output())
    assert found, node.output()
    return found.group(1)


def listed(name: str) -> bool:
    """Whether the abstract socket ``name`` exists (the kernel's list of Unix sockets)."""
    return any(line.split()[-1] == "@" + name
               for line in Path("/proc/net/unix").read_text().splitlines()[1:]
               if len(line.split()) >= 8)


def test_a_program_on_the_node_host_takes_the_local_path(node_factory):
    """The jobs go over the Unix socket; the node still knows the program by its TCP
    address (its dest_path folder is named by it) and logs the move."""
    node = node_factory("-c", "2", "-s", SECRET, "-d")
    with dispy.JobCluster(where, nodes=[("127.0.0.1", node.port)], port=0, secret=SECRET,
                          dest_path="by-address") as cluster:
        results = [cluster.submit(i) for i in range(20)]
        assert [job()[1] for job in results] == [2 * i for i in range(20)]
        assert families(cluster) == [socket.AF_UNIX]
        cwd = results[0].result[0]
        assert "/dest/127.0.0.1/by-address" in cwd, cwd
        assert results[0].ip_addr == "127.0.0.1"
    assert "(local path)" in node.output()


def test_tcp_only_keeps_tcp(node_factory):
    """dispynode --tcp_only offers no local path: the program stays on TCP."""
    node = node_factory("-c", "1", "--tcp_only", "-d")
    with dispy.JobCluster(where, nodes=[("127.0.0.1", node.port)], port=0) as cluster:
        assert cluster.submit(3)()[1] == 6
        assert families(cluster) == [socket.AF_INET]
    assert "local path" not in node.output()


def test_tls_keeps_tls(node_factory, tmp_path):
    """A TLS node offers no local path: its programs keep the TLS connection."""
    cert, key = cert_and_key(tmp_path, "local")
    node = node_factory("-c", "1", "-s", SECRET, "--certfile", cert, "--keyfile", key)
    with dispy.JobCluster(where, nodes=[("127.0.0.1", node.port)], port=0, secret=SECRET,
                          certfile=cert, keyfile=key) as cluster:
        assert cluster.submit(4)()[1] == 8
        assert families(cluster) == [socket.AF_INET]


async def _handshake(name: str, secret: str) -> dict:
    conn = await localpath.connect(name)
    try:
        welcome = await client_handshake(conn, secret, {
            "client_id": "intruder", "client_name": "intruder",
            "session": new_session_key()}, 5)
        return welcome
    finally:
        conn.close()


def test_the_local_socket_gives_strangers_nothing(node_factory, tmp_path):
    """Found in /proc/net/unix by anyone on the host: junk and a pickle are dropped
    before anything is parsed or unpickled; a wrong secret fails the handshake; the right
    secret with a session never opened over TCP is refused; the node serves on."""
    node = node_factory("-c", "1", "-s", SECRET, "-d")
    name = local_name(node)
    assert listed(name)
    proof = tmp_path / "unpickled"
    pickle = (b"\x80\x04\x95" + b"\x00" * 8 + b"cbuiltins\nopen\n(V" + str(proof).encode()
              + b"\nVw\ntR.")
    for junk in (b"\xff" * 64, pickle, b"GET / HTTP/1.0\r\n\r\n"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect("\0" + name)
            sock.sendall(junk)
            assert sock.recv(100) == b""  # dropped
    assert not proof.exists()
    with pytest.raises(HandshakeError):
        asyncio.run(_handshake(name, "wrong"))
    with pytest.raises(HandshakeError, match="no client session of it is open over TCP"):
        asyncio.run(_handshake(name, SECRET))
    node.wait_for("no client session of it is open over TCP")
    with dispy.JobCluster(where, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(5)()[1] == 10
        assert families(cluster) == [socket.AF_UNIX]
    assert not proof.exists()


def test_the_local_socket_goes_with_the_node(node_factory):
    """Abstract sockets have no file: a node killed with SIGKILL leaves nothing behind,
    and its name is gone at once (a restarted node takes a fresh one)."""
    node = node_factory("-c", "1", "-d")
    name = local_name(node)
    assert listed(name)
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(30)
    deadline = time.monotonic() + 10
    while listed(name):
        assert time.monotonic() < deadline, "the abstract socket outlived its node"
        time.sleep(0.05)
    assert not any(name in entry for entry in os.listdir("/tmp"))


def test_a_program_on_the_scheduler_host_takes_the_local_path(node_factory,
                                                             scheduler_factory):
    """SharedJobCluster to a dispyscheduler on its host moves to the scheduler's local
    path, and the scheduler to its node's; with --tcp_only on the scheduler the program
    stays on TCP (the scheduler still takes the node's local path)."""
    node = node_factory("-c", "2", "-s", SECRET, "-d")
    for extra in ((), ("--tcp_only",)):
        sched = scheduler_factory("--cluster_secret", SECRET, "--node_secret", SECRET,
                                  "-d", *extra)
        with dispy.SharedJobCluster(where, nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                    scheduler_node="127.0.0.1", scheduler_port=sched.port,
                                    secret=SECRET, dest_path="shared-by-address") as cluster:
            jobs = [cluster.submit(i) for i in range(10)]
            assert [job()[1] for job in jobs] == [2 * i for i in range(10)]
            link = cluster._link
            assert link is not None and link.conn is not None
            family = link.conn.get_extra_info("socket").family
            assert family == (socket.AF_INET if extra else socket.AF_UNIX)
        assert ("moved to the local path" in sched.output()) is not bool(extra)
        sched.stop()
    handshakes = [ln for ln in node.output().splitlines() if "handshake with" in ln]
    assert handshakes and all("dispyscheduler" in ln for ln in handshakes)
    assert sum("(local path)" in ln for ln in handshakes) == 2, handshakes


def test_the_schedulers_local_socket_gives_strangers_nothing(scheduler_factory):
    """dispyscheduler's local path refuses a wrong secret and a session it never met
    over TCP, as dispynode's does."""
    sched = scheduler_factory("--cluster_secret", SECRET, "-d")
    sched.wait_for("local path for programs on this host")
    name = re.search(r"local path for programs on this host: @(\S+)",
                     sched.output()).group(1)
    with pytest.raises(HandshakeError):
        asyncio.run(_handshake(name, "wrong"))
    with pytest.raises(HandshakeError, match="no client session of it is open over TCP"):
        asyncio.run(_handshake(name, SECRET))


def test_a_crowded_local_socket_leaves_the_program_on_tcp(node_factory):
    """Connections that never finish their handshake fill the node's pre-auth quota for
    this user on the local path: the program stays on TCP (and tells the node so at
    once), its jobs run."""
    node = node_factory("-c", "1", "-s", SECRET, "-d")
    name = local_name(node)
    idle = []
    try:
        for _ in range(16):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect("\0" + name)
            idle.append(sock)
        with dispy.JobCluster(where, nodes=[("127.0.0.1", node.port)], port=0,
                              secret=SECRET) as cluster:
            assert cluster.submit(6)()[1] == 12
            assert families(cluster) == [socket.AF_INET]
    finally:
        for sock in idle:
            sock.close()


def go_and_double(go: str, x: int) -> int:
    import os
    import time

    deadline = time.time() + 60
    while not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.02)
    return 2 * x


def test_a_lost_local_connection_loses_no_result(node_factory, tmp_path):
    """The program's local connection breaks while jobs run: it reconnects (TCP, then
    the local path again), and every job ends Finished once, with its result."""
    node = node_factory("-c", "2", "-s", SECRET)
    go = tmp_path / "go"
    with dispy.JobCluster(go_and_double, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        jobs = [cluster.submit(str(go), i) for i in range(4)]
        deadline = time.monotonic() + 30
        while not any(job.status == dispy.DispyJob.Running for job in jobs):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        link = next(lk for lk in cluster._engine.links.values() if lk.conn is not None)
        first = link.conn
        cluster._engine.loop.call_soon_threadsafe(first.close)
        go.touch()
        assert [job() for job in jobs] == [0, 2, 4, 6]
        assert all(job.status == dispy.DispyJob.Finished for job in jobs)
        assert link.conn is not first
        assert families(cluster) == [socket.AF_UNIX]
