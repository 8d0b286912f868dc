"""Node control from the client: allocate, deallocate, close, resetup, CPUs, files, status."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import weakref

import pytest
from conftest import free_port, wait_started

import dispy

pytestmark = pytest.mark.timeout(90)


class NodeEvents:
    """cluster_status callback that lets a test wait for node events."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[tuple[int, object]] = []

    def __call__(self, status, node, job) -> None:
        if job is None:
            with self.cond:
                self.events.append((status, node))
                self.cond.notify_all()

    def count(self, status: int) -> int:
        return sum(1 for s, _ in self.events if s == status)

    def wait(self, status: int, n: int = 1, timeout: float = 30) -> object:
        with self.cond:
            assert self.cond.wait_for(lambda: self.count(status) >= n, timeout), self.events
            return [nd for s, nd in self.events if s == status][n - 1]


def make(node, computation, nodes=None, **kw):
    return dispy.JobCluster(computation, nodes=nodes or ["127.0.0.1"], node_port=node.port,
                            port=0, **kw)


def slow(x):
    dispy_provisional_result("started")  # noqa: F821 (a dispy builtin on the node)
    time.sleep(x)
    return x


def ident(x):
    return x


def test_unknown_node_gives_minus_one_and_a_logged_reason(node, caplog):
    caplog.set_level(logging.ERROR, logger="dispy")
    with make(node, ident) as cluster:
        assert cluster.submit(1)() == 1
        for call in (lambda: cluster.deallocate_node("10.9.9.9"),
                     lambda: cluster.close_node("10.9.9.9"),
                     lambda: cluster.resetup_node("10.9.9.9"),
                     lambda: cluster.node_jobs("10.9.9.9"),
                     lambda: cluster.set_node_cpus("10.9.9.9", 1),
                     lambda: cluster.send_file(__file__, "10.9.9.9")):
            assert call() == -1
        assert cluster.submit_node("10.9.9.9", 1) is None
        assert cluster.allocate_node(42) == -1
    assert "not a node of this cluster" in caplog.text


def test_node_jobs_and_set_node_cpus(node):
    events = NodeEvents()
    with make(node, slow, cluster_status=events) as cluster:
        dnode = events.wait(dispy.DispyNode.Initialized)
        assert cluster.set_node_cpus(dnode, -1) == 1
        jobs = [cluster.submit(1.0) for _ in range(3)]
        wait_started(jobs[0])
        running = cluster.node_jobs("127.0.0.1")
        assert running == [jobs[0]]  # one CPU: the others wait
        assert cluster.status().jobs_pending == 2
        assert cluster.set_node_cpus("127.0.0.1", 2) == 2
        wait_started(jobs[1])
        assert len(cluster.node_jobs(dnode)) == 2
        assert cluster.set_node_cpus("127.0.0.1", -2) == -1  # none would be left
        for job in jobs:
            assert job() == 1.0


def test_deallocate_then_allocate_again(node):
    events = NodeEvents()
    with make(node, ident, cluster_status=events) as cluster:
        events.wait(dispy.DispyNode.Initialized)
        assert cluster.deallocate_node("127.0.0.1") == 0
        job = cluster.submit(5)
        assert not job.finish.wait(1.0)  # queued: no node takes it
        assert job.status == dispy.DispyJob.Created
        assert cluster.allocate_node("127.0.0.1") == 0
        assert job() == 5
        assert events.count(dispy.DispyNode.Initialized) == 1  # never set up again


@pytest.mark.parametrize("how", ["allocate_node", "discover_nodes"])
def test_node_added_without_a_port_is_at_the_clusters_node_port(node_factory, how):
    """allocate_node / discover_nodes of a host without a port: the cluster's node_port
    (the spec's default), not the port of whichever ``nodes`` entry came first."""
    first, second = node_factory("-c", "1"), node_factory("-c", "1")
    with dispy.JobCluster(ident, nodes=[("127.0.0.1", first.port)], node_port=second.port,
                          port=0) as cluster:
        assert cluster.wait_nodes(1, timeout=30) == 1
        getattr(cluster, how)("127.0.0.1")
        assert cluster.wait_nodes(2, timeout=30) == 2
        assert sorted(n.port for n in cluster.status().nodes) == sorted(
            [first.port, second.port])


def test_close_node_then_allocate_node_sets_it_up_again(node):
    events = NodeEvents()
    with make(node, slow, cluster_status=events) as cluster:
        events.wait(dispy.DispyNode.Initialized)
        running = cluster.submit(0.5)
        wait_started(running)
        assert cluster.close_node("127.0.0.1") == 0
        assert running() == 0.5  # close_node lets running jobs finish
        events.wait(dispy.DispyNode.Closed)
        assert cluster.submit_node("127.0.0.1", 1) is None
        queued = cluster.submit(0.1)
        assert not queued.finish.wait(1.0)
        assert cluster.allocate_node(dispy.NodeAllocate("127.0.0.1", port=node.port)) == 0
        events.wait(dispy.DispyNode.Initialized, 2)
        assert queued() == 0.1


def test_close_node_terminate_pending_cancels_running_jobs(node):
    events = NodeEvents()
    with make(node, slow, cluster_status=events) as cluster:
        events.wait(dispy.DispyNode.Initialized)
        job = cluster.submit(60)
        wait_started(job)
        assert cluster.close_node("127.0.0.1", terminate_pending=True) == 0
        job()
        assert job.status == dispy.DispyJob.Cancelled
        events.wait(dispy.DispyNode.Closed)


def setup_data(value):
    global data
    data = value
    return 0


def read_data():
    return data  # noqa: F821 (set by setup)


def test_resetup_node_swaps_in_memory_data(node):
    events = NodeEvents()
    alloc = dispy.NodeAllocate("127.0.0.1", port=node.port, setup_args=("first",))
    with make(node, read_data, nodes=[alloc], setup=setup_data, cluster_status=events) as c:
        dnode = events.wait(dispy.DispyNode.Initialized)
        assert c.submit()() == "first"
        alloc.setup_args = ("second",)
        assert c.resetup_node(dnode) == 0
        events.wait(dispy.DispyNode.Initialized, 2)
        assert [c.submit()() for _ in range(4)] == ["second"] * 4
        assert events.count(dispy.DispyNode.Closed) == 0


def stat_of(name):
    import os

    st = os.stat(name)
    with open(name, "rb") as fh:
        return st.st_size, st.st_mtime_ns, st.st_mode & 0o777, fh.read(16)


def test_send_file_to_a_node(node, tmp_path):
    events = NodeEvents()
    data = tmp_path / "sub" / "data.txt"
    data.parent.mkdir()
    data.write_text("payload")
    os.chmod(data, 0o640)
    os.utime(data, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    with make(node, stat_of, cluster_status=events) as cluster:
        dnode = events.wait(dispy.DispyNode.Initialized)
        assert cluster.send_file(str(data), dnode) == 0
        size, mtime, mode, text = cluster.submit("data.txt")()  # basename only
        assert (size, mtime, mode, text) == (7, 1_600_000_000_123_456_789, 0o640, b"payload")
        assert cluster.send_file(str(tmp_path / "missing"), dnode) == -1


def test_send_file_over_the_node_limit_is_refused(node_factory, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="dispy")
    node = node_factory("--max_file_size", "1k")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5000)
    events = NodeEvents()
    with make(node, ident, cluster_status=events) as cluster:
        dnode = events.wait(dispy.DispyNode.Initialized)
        assert cluster.send_file(str(big), dnode) == -1
        assert "big.bin" in caplog.text and "1024" in caplog.text
        assert cluster.submit(3)() == 3  # the computation is unharmed


def test_unchanged_files_are_not_sent_again(node, tmp_path):
    data = tmp_path / "big.bin"
    data.write_bytes(os.urandom(3 << 20))

    def run_cluster():
        events = NodeEvents()
        with make(node, stat_of, depends=[str(data)], dest_path="shared", cleanup=False,
                  cluster_status=events) as cluster:
            dnode = events.wait(dispy.DispyNode.Initialized)
            size = cluster.submit("big.bin")()[0]
            return size, dnode.tx

    size, tx_first = run_cluster()  # tx counts bytes sent to the node by this program
    assert size == 3 << 20 and tx_first > 3 << 20
    size, tx_second = run_cluster()
    assert size == 3 << 20 and tx_second - tx_first < 1 << 20
    data.write_bytes(os.urandom(2 << 20))  # changed: sent again
    size, tx_third = run_cluster()
    assert size == 2 << 20 and tx_third - tx_second > 2 << 20


def listing(path):
    import os

    return sorted(os.listdir(path))


def test_cluster_closing_leaves_a_dest_path_another_cluster_uses(node, tmp_path):
    """Two clusters of one program in one dest_path (and a third in a folder inside it):
    the first closing with cleanup=True leaves the files the others use, also those
    their files check found there already; the last one closing removes the folder."""
    data = tmp_path / "data.bin"
    data.write_bytes(b"d" * 1000)
    a = make(node, listing, depends=[str(data)], dest_path="common")
    b = make(node, listing, depends=[str(data)], dest_path="common")
    c = make(node, listing, dest_path="common/inner")
    try:
        assert a.submit(".")() == ["data.bin", "inner"]
        assert b.submit(".")() == ["data.bin", "inner"]
        assert c.submit(".")() == []
        a.close(timeout=10)
        assert b.submit(".")() == ["data.bin", "inner"]  # still there for b
        b.close(timeout=10)
        assert c.submit(".")() == []  # its folder survives b's cleanup
        dest = node.prefix / "dispy" / f"node-{node.port}" / "dest" / "127.0.0.1"
        assert (dest / "common" / "inner").is_dir()
    finally:
        for cluster in (a, b, c):
            cluster.close(timeout=10, terminate=True)
    assert not dest.exists()


def job_dep_present(name):
    import os

    return os.path.exists(name)


def test_job_depends_files_removed_after_the_job(node, tmp_path):
    dep = tmp_path / "per_job.txt"
    dep.write_text("x")
    with make(node, job_dep_present, cleanup=False, dest_path="keep") as cluster:
        assert cluster.submit("per_job.txt", dispy_job_depends=[str(dep)])() is True
        assert cluster.submit("per_job.txt")() is False


class LinuxWithMemory(dispy.NodeAllocate):
    """Only Linux nodes that report more than 1 MB of free memory."""

    seen: list = []

    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        self.seen.append((avail_info, platform))
        if (isinstance(avail_info, dispy.DispyNodeAvailInfo) and avail_info.memory > 2**20
                and platform.startswith("Linux")):
            return 1
        return 0


class NoWindows(dispy.NodeAllocate):
    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        return cpus if platform.startswith("Windows") else 0


def test_nodeallocate_subclass_filters_on_avail_info_and_platform(node):
    events = NodeEvents()
    alloc = LinuxWithMemory("127.0.0.1", port=node.port)
    with make(node, ident, nodes=[alloc], cluster_status=events) as cluster:
        dnode = events.wait(dispy.DispyNode.Initialized)
        assert cluster.status().nodes[0].cpus == dnode.cpus
        jobs = [cluster.submit(i) for i in range(4)]
        assert [j() for j in jobs] == [0, 1, 2, 3]
    avail, platform = alloc.seen[0]
    assert avail.disk > 0 and 0 <= avail.cpu <= 100 and "Linux" in platform


def test_nodeallocate_that_refuses_leaves_jobs_queued(node):
    with make(node, ident, nodes=[NoWindows("127.0.0.1", port=node.port)]) as cluster:
        job = cluster.submit(1)
        assert not job.finish.wait(1.5)
        assert cluster.close(timeout=0, terminate=True)
    assert job.status == dispy.DispyJob.Cancelled


class Asked(dispy.NodeAllocate):
    """Gives ``give`` CPUs, and notes that it was asked."""

    def __init__(self, host, port, give, asked):
        super().__init__(host, port)
        self.give, self.asked = give, asked

    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        self.asked.append((self.host, self.give))
        return min(cpus, self.give)


def test_each_matching_nodeallocate_is_asked_until_one_gives_cpus(node):
    """The spec: "when dispy finds a node, each NodeAllocate object's allocate method is
    called": a filter that says 0 leaves the node to the next pattern (the first
    matching one used to decide alone), and the one that gives CPUs sets it up."""
    asked: list = []
    allocs = [Asked("127.0.0.*", node.port, 0, asked), Asked("*", node.port, 1, asked),
              Asked("*", node.port, 2, asked)]
    events = NodeEvents()
    with make(node, ident, nodes=allocs, cluster_status=events) as cluster:
        events.wait(dispy.DispyNode.Initialized)
        assert [j() for j in [cluster.submit(i) for i in range(3)]] == [0, 1, 2]
    assert asked == [("127.0.0.*", 0), ("*", 1)]  # the third one is not asked


def test_avail_info_arrives_with_pulses(node):
    events = NodeEvents()
    with make(node, slow, pulse_interval=1, cluster_status=events) as cluster:
        dnode = events.wait(dispy.DispyNode.Initialized)
        job = cluster.submit(0.1)
        got = events.wait(dispy.DispyNode.AvailInfo, 2)
        assert got is dnode
        info = dnode.avail_info
        assert isinstance(info, dispy.DispyNodeAvailInfo)
        assert info.memory > 0 and info.disk > 0 and 0 <= info.swap <= 100
        assert dnode.update_time > 0
        job()
    for attr in ("ip_addr", "name", "cpus", "avail_cpus", "busy", "jobs_done", "cpu_time",
                 "tx", "rx", "update_time", "avail_info"):
        assert hasattr(dnode, attr)
    assert dnode.jobs_done == 1 and dnode.tx > 0 and dnode.rx > 0


def test_discover_nodes_adds_a_second_node(node_factory):
    first, second = node_factory(), node_factory()
    events = NodeEvents()
    with dispy.JobCluster(ident, nodes=[dispy.NodeAllocate("127.0.0.1", port=first.port)],
                          port=0, cluster_status=events) as cluster:
        events.wait(dispy.DispyNode.Initialized)
        assert cluster.discover_nodes([dispy.NodeAllocate("127.0.0.1", port=second.port)]) == 0
        events.wait(dispy.DispyNode.Initialized, 2)
        assert sorted(n.port for n in cluster.status().nodes) == sorted(
            [first.port, second.port])


def test_finished_jobs_are_freed_when_the_user_drops_them(node):
    with make(node, ident, callback=lambda job: None) as cluster:
        job = cluster.submit(b"r" * 100_000)
        assert len(job()) == 100_000
        assert job._args is None  # arguments dropped once dispatched (not reentrant)
        cluster.wait()
        ref = weakref.ref(job)
        del job
        gc.collect()
        assert ref() is None


def slow_setup():
    time.sleep(1)
    return 0


def read_it(name):
    with open(name) as fh:
        return fh.read()


def test_node_methods_right_after_jobcluster_wait_for_setup(node, tmp_path):
    """submit_node, send_file and set_node_cpus for a listed node that is still being
    set up wait for it (the original said "Invalid node"); wait_nodes counts ready nodes."""
    data = tmp_path / "data.txt"
    data.write_text("payload")
    with make(node, read_it, setup=slow_setup) as cluster:
        assert cluster.send_file(str(data), "127.0.0.1") == 0
        assert cluster.set_node_cpus("127.0.0.1", 1) == 1
        job = cluster.submit_node("127.0.0.1", "data.txt")
        assert job is not None and job() == "payload" and job.ip_addr == "127.0.0.1"
        assert cluster.wait_nodes(1, timeout=10) == 1


def test_wait_nodes_times_out_with_the_count(node):
    with make(node, ident) as cluster:
        assert cluster.wait_nodes(1, timeout=20) == 1
        start = time.monotonic()
        assert cluster.wait_nodes(2, timeout=0.3) == 1
        assert time.monotonic() - start < 5
        with pytest.raises(ValueError):
            cluster.wait_nodes(0)


def test_a_listed_node_that_starts_after_the_cluster_joins_without_jobs(node_factory):
    """dispynode started a moment after JobCluster(): the cluster connects when it is up
    (wait_nodes returns) though no job was submitted yet."""
    port = free_port()
    cluster = dispy.JobCluster(ident, nodes=[("127.0.0.1", port)], port=0)
    try:
        assert cluster.wait_nodes(1, timeout=0.5) == 0
        node_factory("-c", "1", port=port)
        assert cluster.wait_nodes(1, timeout=30) == 1
        assert cluster.submit(5)() == 5
    finally:
        cluster.close(timeout=10, terminate=True)


def test_unreachable_listed_node_is_not_waited_for(caplog):
    """A listed node that cannot be reached gives -1 soon, not after the setup wait."""
    from conftest import free_port

    cluster = dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=free_port(), port=0)
    try:
        start = time.monotonic()
        assert cluster.set_node_cpus("127.0.0.1", 1) == -1
        assert cluster.submit_node("127.0.0.1", 1) is None
        assert time.monotonic() - start < 10
    finally:
        cluster.close(timeout=0, terminate=True)


def wait_for_gate(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.02)
    return path


@pytest.mark.timeout(60)
def test_a_job_whose_files_vanished_ends_and_the_next_takes_its_cpu(node_factory, tmp_path):
    """A job's ``dispy_job_depends`` file removed before the job's turn: that job ends
    Cancelled with the reason, and the job queued behind it runs on the CPU it would have
    had (nothing else would ask for a dispatch: no job runs any more)."""
    node = node_factory("-c", "1")
    gate, dep = tmp_path / "go", tmp_path / "per_job.txt"
    dep.write_text("x")
    with make(node, wait_for_gate) as cluster:
        first = cluster.submit(str(gate))
        doomed = cluster.submit(str(gate), dispy_job_depends=[str(dep)])
        after = cluster.submit(str(gate))
        dep.unlink()
        gate.touch()
        assert first() == str(gate)
        assert doomed() is None and doomed.status == dispy.DispyJob.Cancelled
        assert "cannot read" in doomed.exception
        assert after(timeout=20) == str(gate) and after.status == dispy.DispyJob.Finished
