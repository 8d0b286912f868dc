"""Network-facing hardening: forged log lines, pre-auth connection floods, TLS handshake
timeouts, discovery amplification and announcement floods (real daemons, real sockets)."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
import threading
import time

import pytest

import dispy
from dispy.client.announced import MAX_CONNECTING, MAX_UNREACHED
from dispy.wire import codec, discovery
from dispy.wire.discoverymsg import Discover, NodeAnnouncement

pytestmark = pytest.mark.timeout(90)

FAKE = "2026-01-01 INFO fake"
#: a second loopback source address: the attacker, while clients use 127.0.0.1
ATTACKER = "127.0.0.2"


def ident(x):
    return x


class IdleFlood:
    """Keeps ``count`` connections from ``source`` to a daemon open without a word, and
    opens a new one for every one the daemon closes (as a patient attacker would)."""

    def __init__(self, port: int, count: int = 200, source: str = ATTACKER) -> None:
        self.port, self.count, self.source = port, count, source
        self.socks: list[socket.socket] = []
        self.opened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> IdleFlood:
        self.thread.start()
        deadline = time.monotonic() + 20
        while self.opened < self.count:
            assert time.monotonic() < deadline, f"only {self.opened} connections opened"
            time.sleep(0.05)
        return self

    def wait_reopened(self, timeout: float = 20.0) -> None:
        """Until the daemon has closed some of the flood's connections (the thread then
        opens new ones): when it does depends on when its loop accepts them, not on
        how soon the client's job ended."""
        deadline = time.monotonic() + timeout
        while self.opened <= self.count:
            assert time.monotonic() < deadline, "the daemon never closed a flood connection"
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.socks:
            sock.close()

    def _run(self) -> None:
        while not self.stop.is_set():
            while len(self.socks) < self.count:
                sock = socket.socket()
                sock.bind((self.source, 0))
                sock.setblocking(False)
                try:
                    sock.connect(("127.0.0.1", self.port))
                except BlockingIOError:
                    pass
                self.socks.append(sock)
                self.opened += 1
            for sock in list(self.socks):
                try:
                    if sock.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                self.socks.remove(sock)
                sock.close()
            self.stop.wait(0.05)


def _limit_descriptors(pid: int, limit: int = 128) -> None:
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))


def _send_hello(port: int, hello: dict) -> None:
    """Send one hello frame and read until the node closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(bytes(p) for p in codec.encode(hello)))
        try:
            while sock.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError):
            pass


def test_peer_strings_cannot_forge_log_lines(node):
    evil = f"1.0\n{FAKE}\r\n{FAKE} again"
    _send_hello(node.port, {"op": "hello", "proto": 999, "version": evil, "nonce": "ab",
                            "client_name": evil})
    node.wait_for("protocol version mismatch")
    lines = node.output().splitlines()
    assert not [line for line in lines if line.startswith(FAKE)], node.output()
    assert any("1.0\\n2026-01-01 INFO fake" in line for line in lines)


def _check_quiet(log: str) -> None:
    assert len(log) < 64 * 1024, f"log grew to {len(log)} bytes:\n{log[:4000]}"
    assert "Traceback" not in log, log[:4000]


def test_idle_connection_flood_does_not_block_a_client_of_a_node(node_factory):
    node = node_factory("-c", "1", "--msg_timeout", "5")
    _limit_descriptors(node.proc.pid)
    with IdleFlood(node.port) as flood:
        with dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port,
                              port=0) as cluster:
            job = cluster.submit(7)
            assert job.finish.wait(40), "the flood kept the client's job from running"
            assert job.result == 7
        flood.wait_reopened()  # the node closed connections over its caps
    out = node.output()
    assert f"refused connection from {ATTACKER}" in out
    _check_quiet(out)


def test_idle_connection_flood_does_not_block_a_client_of_a_scheduler(
        scheduler_factory, node_factory):
    node = node_factory("-c", "1")
    sched = scheduler_factory("--msg_timeout", "5")
    _limit_descriptors(sched.proc.pid)
    with IdleFlood(sched.port) as flood:
        with dispy.SharedJobCluster(ident, nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                    scheduler_node="127.0.0.1",
                                    scheduler_port=sched.port) as cluster:
            job = cluster.submit(8)
            assert job.finish.wait(40), "the flood kept the client's job from running"
            assert job.result == 8
        flood.wait_reopened()
    out = sched.output()
    assert f"refused connection from {ATTACKER}" in out
    _check_quiet(out)


@pytest.fixture
def certfile(tmp_path):
    path = tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-keyout", str(path), "-nodes", "-out", str(path), "-days", "2",
         "-subj", "/CN=dispy-test"], check=True, capture_output=True, timeout=30)
    return str(path)


def _seconds_until_closed(port: int, bound: float = 10.0) -> float:
    """Open a TCP connection, say nothing (no TLS ClientHello), and time the daemon's EOF."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=bound) as sock:
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"a silent connection was still open after {bound} s")
    return time.monotonic() - start


@pytest.mark.parametrize("daemon", ["node", "scheduler"])
def test_silent_tls_connection_is_closed_after_msg_timeout(daemon, node_factory,
                                                           scheduler_factory, certfile):
    if daemon == "node":
        proc = node_factory("--certfile", certfile, "--msg_timeout", "2")
    else:
        proc = scheduler_factory("--cluster_certfile", certfile, "--msg_timeout", "2")
    assert 1.5 < _seconds_until_closed(proc.port) < 10


def _replies(sock: socket.socket, wait: float) -> list[bytes]:
    """Datagrams arriving on ``sock`` within ``wait`` seconds."""
    got = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            break
    return got


def test_discover_reply_is_no_larger_than_the_request(node):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        reply_port = udp.getsockname()[1]
        bare = discovery.encode(Discover(reply_port=reply_port, client_id="c" * 32))
        udp.sendto(bare, ("127.0.0.1", node.port))
        sizes = [len(r) for r in _replies(udp, 2.0)]
        assert all(size <= len(bare) for size in sizes), (len(bare), sizes)
        padded = discovery.encode(discovery.discover(reply_port, "c" * 32))
        udp.sendto(padded, ("127.0.0.1", node.port))
        replies = _replies(udp, 5.0)
    assert replies, "the node did not answer a padded discover"
    reply = discovery.decode(replies[0])
    assert isinstance(reply, NodeAnnouncement)
    assert len(replies[0]) <= len(padded) and reply.port == node.port


#: A client program with its own engine on 127.0.0.1 (tests share one engine per process,
#: made by whichever test came first): it floods itself with ``count`` forged
#: announcements naming 127.1.x.y:PORT (and 200 naming 127.2.x.y, outside its ``nodes``),
#: optionally runs a job, waits for a line on stdin, then prints what it saw.
FLOODED_CLIENT = """
import json, socket, sys
import dispy
from dispy.wire import discovery
from dispy.wire.discoverymsg import NodeAnnouncement

def ident(x):
    return x

pattern, node_port, count, run_job = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with dispy.JobCluster(ident, nodes=[pattern], ip_addr="127.0.0.1", port=0,
                      node_port=node_port) as cluster:
    engine = cluster._engine
    target = ("127.0.0.1", engine.finder.udp.transport.get_extra_info("sockname")[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for prefix, n in (("127.1", count), ("127.2", 200)):
            for i in range(n):
                ip = f"{prefix}.{i // 250}.{i % 250 + 1}"
                udp.sendto(discovery.encode(NodeAnnouncement(ip_addr=ip, port=node_port,
                                                             name="fake", cpus=8)), target)
    result = None
    if run_job == "job":
        job = cluster.submit(11)
        result = job.result if job.finish.wait(30) else "never ran"
    print("flooded", flush=True)
    sys.stdin.readline()
    print(json.dumps({"links": len(engine.links), "result": result}), flush=True)
"""


def _flooded_client(pattern: str, node_port: int, job: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", FLOODED_CLIENT, pattern, str(node_port), "3000",
         "job" if job else "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _finish(client: subprocess.Popen) -> dict:
    try:
        out, _ = client.communicate("done\n", timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    return json.loads(out.splitlines()[-1])


class SilentListener:
    """Accepts TCP connections on every loopback address and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(4096)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.conns.append(self.sock.accept()[0])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for conn in self.conns:
            conn.close()
        self.sock.close()


def test_announcement_flood_makes_few_connection_attempts():
    listener = SilentListener()
    client = _flooded_client("127.1.*", listener.port, job=False)
    try:
        assert client.stdout.readline().strip() == "flooded"
        deadline = time.monotonic() + 10
        while len(listener.conns) < MAX_CONNECTING:
            assert time.monotonic() < deadline, f"{len(listener.conns)} attempts only"
            time.sleep(0.05)
        time.sleep(1.0)  # more attempts, were they not bounded, would arrive now
        attempts = [conn.getsockname()[0] for conn in listener.conns]
        seen = _finish(client)
    finally:
        client.kill()
        client.wait()
        listener.close()
    assert len(attempts) <= MAX_CONNECTING
    assert all(ip.startswith("127.1.") for ip in attempts)
    assert seen["links"] <= MAX_CONNECTING + MAX_UNREACHED


def test_real_node_is_used_after_an_announcement_flood(node):
    client = _flooded_client("127.*", node.port, job=True)
    try:
        assert client.stdout.readline().strip() == "flooded"
        seen = _finish(client)
    finally:
        client.kill()
        client.wait()
    assert seen["result"] == 11, "the real node was never used"
    assert seen["links"] <= MAX_CONNECTING + MAX_UNREACHED + 1
