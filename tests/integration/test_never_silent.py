"""While jobs wait, the client says why; the interactive node answers on stdin."""

from __future__ import annotations

import os
import socket
import time

import pytest
from conftest import free_port

import dispy

pytestmark = pytest.mark.timeout(90)


def ident(x):
    return x


def test_no_node_answered(caplog, monkeypatch):
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)
    cluster = dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=free_port(), port=0)
    job = cluster.submit(1)
    assert cluster.wait(timeout=2) is False
    cluster.close(timeout=0, terminate=True)
    assert job() is None and job.status == dispy.DispyJob.Cancelled
    assert "cannot connect" in caplog.text and "no node is usable" in caplog.text


def test_host_name_that_does_not_resolve(caplog, monkeypatch):
    """A mistyped host name is named at once, and the cluster still opens, waits and
    says why (it used to fail in the event loop's UDP send with a cryptic ValueError)."""
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # at once, whatever DNS this machine has
        if host == "no-such-node.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    cluster = dispy.JobCluster(ident, nodes=["no-such-node.invalid"], port=0)
    job = cluster.submit(1)
    assert cluster.wait(timeout=2) is False
    cluster.close(timeout=0, terminate=True)
    assert job() is None and job.status == dispy.DispyJob.Cancelled
    assert "'no-such-node.invalid': its name does not resolve" in caplog.text
    assert "no node is usable" in caplog.text


class NoCPUs(dispy.NodeAllocate):
    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        return 0


def test_nodeallocate_zero_is_reported(node, caplog, monkeypatch):
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)
    cluster = dispy.JobCluster(ident, nodes=[NoCPUs("127.0.0.1", port=node.port)], port=0)
    cluster.submit(1)
    assert cluster.wait(timeout=2) is False
    cluster.close(timeout=0, terminate=True)
    assert "NodeAllocate gave 0 CPUs" in caplog.text


def test_stdin_menu(tmp_path):
    master, slave = os.openpty()
    port = free_port()
    log = tmp_path / "menu.log"
    import subprocess
    import sys
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispy.dispynode", "-i", "127.0.0.1", "-p", str(port),
             "--dest_path_prefix", str(tmp_path), "-c", "1"],
            stdin=slave, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    os.close(slave)
    try:
        def wait_for(text):
            deadline = time.monotonic() + 15
            while text not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)

        wait_for("Enter \"quit\"")
        # the prompt is a line of its own: log lines do not run into it
        text = log.read_text()
        assert "anything else to get status:\n" in text.replace("\r\n", "\n"), text
        os.write(master, b"cpus 1\n")
        wait_for("now using 1 CPUs")
        os.write(master, b"stop\n")
        wait_for("now using 0 CPUs")
        os.write(master, b"start\n")
        wait_for("now using 1 CPUs")
        os.write(master, b"\n")
        wait_for("jobs done")
        os.write(master, b"quit\n")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)




def test_first_stall_report_comes_early(caplog):
    """Without a node, the user hears so within 2-3 s, not after 10 s."""
    cluster = dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=free_port(), port=0)
    start = time.monotonic()
    cluster.submit(1)
    try:
        deadline = start + 6
        while "no node is usable" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        assert time.monotonic() - start < 4.5
    finally:
        cluster.close(timeout=0, terminate=True)


@pytest.mark.parametrize("debug", [False, True])
def test_plain_tcp_probe_is_not_a_warning(node_factory, debug):
    """A port check (connect, close) is logged only with -d."""
    import socket

    node = node_factory("-c", "1", *(["-d"] if debug else []))
    socket.create_connection(("127.0.0.1", node.port), timeout=5).close()
    with dispy.JobCluster(ident, nodes=[("127.0.0.1", node.port)], port=0) as cluster:
        assert cluster.submit(1)() == 1  # the node handled the probe before this
    if debug:
        node.wait_for("dropped connection from 127.0.0.1 during handshake")
    else:
        assert "dropped connection" not in node.output()
