"""The dispy 4.15 keyword names README lists, with the effect of the new ones:
JobCluster's ``host`` (= ``ip_addr``), ``ext_host`` (= ``ext_ip_addr``), ``job_status``
(= ``callback``), ``dispy_port`` (base port: client N, nodes N+1); SharedJobCluster's
``scheduler_host`` (= ``scheduler_node``) and ``client_port`` (accepted).

A program's engine (its interfaces, the port it hears announcements on, its address
behind NAT) is made by its first cluster, once per process; this test process has one
from earlier tests already. So the options that set those run in a program of their
own."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import NodeProcess, free_port

import dispy

pytestmark = pytest.mark.timeout(90)


def double(x):
    return 2 * x


@pytest.fixture
def program(tmp_path):
    """``program(source, *args)`` runs a client program in a process of its own, its
    output (stdout and stderr) in a log; killed at teardown if still running."""
    procs: list[NodeProcess] = []

    def start(source: str, *args: object) -> NodeProcess:
        n = len(procs)
        script, log = tmp_path / f"program-{n}.py", tmp_path / f"program-{n}.log"
        script.write_text(textwrap.dedent(source))
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, str(script), *map(str, args)],
                                    stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=tmp_path,
                                    start_new_session=True)
        prog = NodeProcess(0, tmp_path, log, proc)
        procs.append(prog)
        return prog

    yield start
    for prog in procs:
        prog.stop()


def finished(prog: NodeProcess, timeout: float = 60) -> str:
    """The program's output once it exited 0."""
    try:
        prog.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the program did not end in {timeout} s; output:\n{prog.output()}")
    assert prog.proc.returncode == 0, prog.output()
    return prog.output()


def test_job_status_is_callback(node):
    """``job_status=fn`` is called as ``callback=fn`` is: with each job's result (its
    final status), not with Created or Running (as in dispy 4.15)."""
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def job_status(job):
        with lock:
            seen.append((job.id, job.status))

    with dispy.JobCluster(double, nodes=[("127.0.0.1", node.port)], port=0,
                          job_status=job_status) as cluster:
        jobs = [cluster.submit(i) for i in range(4)]
        assert [job() for job in jobs] == [0, 2, 4, 6]
        assert cluster.wait(timeout=30)  # and their callbacks ran
    with lock:
        done = sorted(i for i, status in seen if status == dispy.DispyJob.Finished)
        assert done == sorted(job.id for job in jobs), seen
        assert len(seen) == len(jobs), seen


HOST = """
    import sys
    import dispy

    def double(x):
        return 2 * x

    port = int(sys.argv[1])
    try:  # an address this host does not have is refused, as with ip_addr
        dispy.JobCluster(double, nodes=["*"], node_port=port, port=0, host="203.0.113.77")
    except ValueError as exc:
        print("refused:", exc, flush=True)
    with dispy.JobCluster(double, nodes=["*"], node_port=port, port=0, host="127.0.0.1",
                          loglevel=dispy.logger.DEBUG) as cluster:
        job = cluster.submit(21)
        print("result", job(), job.ip_addr, flush=True)
"""


def test_host_is_ip_addr(node, program):
    """``host=`` picks the interfaces the program uses, as ``ip_addr=`` does: with
    ``host='127.0.0.1'`` nodes=['*'] is asked on that interface only, and finds the node
    there; an address the host does not have is refused."""
    out = finished(program(HOST, node.port))
    assert "refused: no local interface has address 203.0.113.77" in out, out
    asked = [ln for ln in out.splitlines() if "discovery: asked" in ln]
    assert asked and all(f"discovery: asked 127.0.0.1 (port {node.port})" in ln
                         for ln in asked), out
    assert "result 42 127.0.0.1" in out, out


EXT_HOST = """
    import sys
    import dispy

    def double(x):
        return 2 * x

    node_port, port = int(sys.argv[1]), int(sys.argv[2])
    with dispy.JobCluster(double, nodes=[("127.0.0.1", node_port)], port=port,
                          secret="ext-secret", ext_host="127.0.0.2") as cluster:
        print("result", cluster.submit(21)(), flush=True)
"""


def test_ext_host_is_ext_ip_addr(node_factory, program):
    """``ext_host=`` names the program's public address (behind NAT), as ``ext_ip_addr=``
    does: a node that got its request signed with the node's secret sends its later
    announcements there (here when the program leaves it) instead of to the address the
    request came from."""
    node = node_factory("-c", "1", "-s", "ext-secret", "-d")
    port = free_port()
    assert "result 42" in finished(program(EXT_HOST, node.port, port))
    node.wait_for(f"announced to 127.0.0.2:{port}, which asked for nodes lately")
    assert f"announced to 127.0.0.1:{port}" not in node.output()


DISPY_PORT = """
    import sys
    import dispy

    def where(x):
        return dispy_node_name, x

    cluster = dispy.JobCluster(where, nodes=["127.0.0.*"], dispy_port=int(sys.argv[1]))
    print("ready", flush=True)
    print("nodes", cluster.wait_nodes(1, timeout=30), flush=True)
    job = cluster.submit(7)
    print("result", job(), job.ip_addr, flush=True)
    cluster.close()
"""


def two_free_ports() -> int:
    """A port N such that N and N + 1 are free (TCP and UDP) on 127.0.0.1."""
    while True:
        base = free_port()
        try:
            with socket.socket() as tcp, socket.socket(socket.AF_INET,
                                                       socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", base + 1))
                udp.bind(("", base + 1))
            return base
        except OSError:
            continue


def test_dispy_port_is_the_base_port(node_factory, program):
    """``dispy_port=N``: the program hears node announcements on N and uses nodes on
    N + 1. A node started after the program, with ``dispynode --dispy_port N`` (port
    N + 1, announcing to N), is heard, set up and runs a job. (No job waits meanwhile,
    so the program does not ask for nodes again: the announcement is how it is found.)"""
    base = two_free_ports()
    prog = program(DISPY_PORT, base)
    prog.wait_for("ready", timeout=30)
    node_factory("-c", "1", "--name", "based-node", "--dispy_port", str(base), port=base + 1)
    out = finished(prog)
    assert "nodes 1" in out and "result ('based-node', 7) 127.0.0.1" in out, out


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="needs the IPv6 loopback address ::1")
def test_shared_scheduler_host_and_client_port(scheduler_factory, node):
    """SharedJobCluster ``scheduler_host=`` names the scheduler as ``scheduler_node=``
    does (here one serving on ::1 only, which the default, this host's 127.0.0.1, does
    not reach); ``client_port=`` is accepted; the job runs on the node through it."""
    sched = scheduler_factory(ip="::1")
    nodes = [dispy.NodeAllocate("127.0.0.1", node.port)]
    with pytest.raises(ConnectionError):  # the default scheduler address: not there
        dispy.SharedJobCluster(double, nodes=nodes, scheduler_port=sched.port)
    with dispy.SharedJobCluster(double, nodes=nodes, scheduler_host="::1",
                                scheduler_port=sched.port, client_port=0) as cluster:
        job = cluster.submit(21)
        assert job() == 42, job.exception
        assert job.status == dispy.DispyJob.Finished
    comps = [ln for ln in node.output().splitlines() if "computation 'double'" in ln]
    assert comps and all("from dispyscheduler@" in ln for ln in comps), node.output()
