"""Secrets, TLS, and what an unauthenticated peer can (not) do to a node."""

from __future__ import annotations

import pickle
import socket
import struct
import subprocess
import time

import pytest

import dispy
from dispy.client.engine import Engine

pytestmark = pytest.mark.timeout(90)


def ident(x):
    return x


class Evil:
    """Unpickling this creates a file: proof that someone unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickles_are_never_unpickled(node, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Evil(str(marker)))
    # raw pickle on TCP, as the original's framing would carry it
    for data in (struct.pack("!I", len(payload)) + payload,
                 b"x" * 40 + payload,
                 struct.pack("!II", 5, 1) + b'{"a":' + struct.pack("!Q", len(payload)) + payload,
                 struct.pack("!II", 4, 1) + b"null" + struct.pack("!Q", len(payload)) + payload,
                 struct.pack("!II", 2, 1) + b"{}" + struct.pack("!Q", len(payload)) + payload):
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
            sock.sendall(data)
            sock.settimeout(3)
            try:
                while sock.recv(4096):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    # and on UDP, bare and behind the datagram magic
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for data in (payload, b"DISPY\x01" + payload, b"PING:" + payload, b"\xff" * 9000):
            udp.sendto(data, ("127.0.0.1", node.port))
    time.sleep(0.5)
    assert not marker.exists()
    assert node.proc.poll() is None
    with dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port, port=0) as cluster:
        assert cluster.submit(42)() == 42  # the node still serves
    out = node.output()
    assert "dropped" in out


def test_half_open_connection_is_dropped(node_factory):
    node = node_factory("--msg_timeout", "1")
    sock = socket.create_connection(("127.0.0.1", node.port))
    node.wait_for("dropped connection", timeout=10)
    sock.close()
    with dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port, port=0) as cluster:
        assert cluster.submit(1)() == 1


def test_matching_secret(node_factory):
    node = node_factory("-s", "sesame")
    with dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          secret="sesame") as cluster:
        assert cluster.submit(5)() == 5
    assert "without a secret" not in node.output()


def test_wrong_secret_is_reported_and_job_not_run(node_factory, caplog, monkeypatch):
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)
    node = node_factory("-s", "sesame")
    cluster = dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port, port=0,
                               secret="wrong")
    job = cluster.submit(5)
    assert cluster.wait(timeout=3) is False
    assert cluster.close(timeout=0, terminate=True)
    assert job.status == dispy.DispyJob.Cancelled
    assert "secret mismatch" in caplog.text
    assert "the client was given another secret than this daemon" in node.output()


def test_node_without_secret_warns(node):
    assert "anyone who can reach" in node.output()


@pytest.fixture
def certfile(tmp_path):
    path = tmp_path / "sskeycert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(path), "-nodes",
         "-out", str(path), "-sha256", "-days", "2", "-subj", "/CN=dispy-test"],
        check=True, capture_output=True,
    )
    return str(path)


def test_tls(node_factory, certfile):
    node = node_factory("--certfile", certfile, "-s", "x")
    with dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          certfile=certfile, secret="x") as cluster:
        assert cluster.submit(9)() == 9


def test_plain_client_cannot_talk_to_tls_node(node_factory, certfile, monkeypatch, caplog):
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)
    node = node_factory("--certfile", certfile)
    cluster = dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port, port=0)
    job = cluster.submit(1)
    assert cluster.wait(timeout=3) is False
    cluster.close(timeout=0, terminate=True)
    assert job.status == dispy.DispyJob.Cancelled
    assert "the node uses TLS; give certfile/keyfile" in caplog.text


def test_tls_client_cannot_talk_to_plain_node(node, certfile, monkeypatch, caplog):
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)
    # the engine (one per process, maybe made by an earlier test) reads its own timeout
    monkeypatch.setattr(Engine.get(0, None), "msg_timeout", 2)
    cluster = dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port, port=0,
                               certfile=certfile)
    job = cluster.submit(1)
    assert cluster.wait(timeout=4) is False
    cluster.close(timeout=0, terminate=True)
    assert job.status == dispy.DispyJob.Cancelled
    assert ("the node does not use TLS" in caplog.text
            or "the node gave no TLS answer" in caplog.text), caplog.text
