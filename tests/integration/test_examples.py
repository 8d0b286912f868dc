"""The example programs in examples/, each run as a program against real dispynodes.

Every example takes its nodes from DISPY_NODES / DISPY_NODE_PORT; here they point at
nodes on 127.0.0.1 started by the fixtures (named with --name so results can say which
node ran them). The tests check the programs' output: correct results, and that each
idiom did what it claims (cancellations happened, one job per node at a time, ...).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import dispy

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, cwd: Path, *nodes, timeout: float = 60) -> str:
    """Run ``examples/name`` with DISPY_NODES naming ``nodes``; returns its stdout."""
    entries = ",".join(f"127.0.0.1:{n.port}" for n in nodes) if len(nodes) > 1 else "127.0.0.1"
    full_env = {**os.environ, "DISPY_NODES": entries, "DISPY_NODE_PORT": str(nodes[0].port),
                "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{name} exited with {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc.stdout


@pytest.fixture
def alpha(node_factory):
    """One node with 2 CPUs, named alpha."""
    return node_factory("-c", "2", "--name", "alpha")


@pytest.fixture
def pair(node_factory):
    """Two nodes on 127.0.0.1 (different ports) with 2 CPUs each, named alpha and beta."""
    return node_factory("-c", "2", "--name", "alpha"), node_factory("-c", "2", "--name", "beta")


def test_sample(alpha, tmp_path):
    out = run_example("sample.py", tmp_path, alpha)
    found = re.findall(r"^job (\d+): compute\((\d+)\) = (\d+) on (\S+) in", out, re.M)
    assert len(found) == 10, out
    for i, (job_id, n, total, host) in enumerate(found):
        assert (int(job_id), int(n), host) == (i, 1000 + i, "alpha")
        assert int(total) == sum(k * k for k in range(1000 + i))
    assert re.search(r"127\.0\.0\.1 \(alpha\) \|\s+2 \|\s+10 \|", out), out
    assert "Total job time" in out


def test_obj_instances(alpha, tmp_path):
    out = run_example("obj_instances.py", tmp_path, alpha)
    found = re.findall(r"^result: Rectangle\((\d+), (\d+)\) area (\d+); node said: scaling "
                       r"Rectangle\((\d+), (\d+)\) \(area (\d+)\) by 3$", out, re.M)
    assert len(found) == 5, out
    for w, row in enumerate(found, start=1):
        assert [int(v) for v in row] == [3 * w, 3 * (w + 1), 9 * w * (w + 1), w, w + 1,
                                         w * (w + 1)]


def test_provisional_results_callback_cancels_the_rest(alpha, tmp_path):
    out = run_example("provisional_results.py", tmp_path, alpha)
    good = re.findall(r"^good enough: ([\d.]+) from job (\d+)", out, re.M)
    assert len(good) == 1, out
    value, winner = float(good[0][0]), good[0][1]
    assert value < 0.001
    # the winner's improvements reached the client one by one, decreasing
    steps = [float(v) for v in re.findall(rf"^job {winner} \(seed \d+\): provisional best "
                                          r"([\d.]+)$", out, re.M)]
    assert len(steps) >= 2 and steps == sorted(steps, reverse=True) and steps[-1] == value
    ends = re.findall(r"^job (\d+): (\w+) \((ran|never started)\)$", out, re.M)
    assert len(ends) == 6, out
    # a full search takes 6 s: every job ended only because the callback cancelled it,
    # the two running on the node's 2 CPUs as well as the four still queued
    assert {status for _, status, _ in ends} == {"Cancelled"}, out
    assert [how for _, _, how in ends] == ["ran"] * 2 + ["never started"] * 4, out


def test_delegate_per_job_functions(alpha, tmp_path):
    out = run_example("delegate.py", tmp_path, alpha)
    fib = [0, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    funcs = {"factorial": math.factorial, "fibonacci": fib.__getitem__,
             "collatz_steps": {10: 6, 20: 7, 27: 111}.get}
    found = re.findall(r"^(\w+)\((\d+)\) = (\d+)$", out, re.M)
    assert len(found) == 9, out
    for name, n, value in found:
        assert int(value) == funcs[name](int(n)), (name, n, value)


def factorial(n):
    return math.factorial(n)


def delegate(name, n):
    return globals()[name](n)


def test_delegate_functions_are_for_their_job_only(node_factory):
    one_cpu = node_factory("-c", "1")
    with dispy.JobCluster(delegate, nodes=["127.0.0.1"], node_port=one_cpu.port,
                          port=0) as cluster:
        first = cluster.submit("factorial", 5, dispy_job_depends=[factorial])
        assert first() == 120
        later = cluster.submit("factorial", 5)  # ships no function
        later()
    assert later.status == dispy.DispyJob.Terminated and "KeyError" in later.exception


SCHEDULED = re.compile(r"^(data-\d+\.txt): total (\d+) on (\w+) \(([\d.]+) \.\. ([\d.]+)\)$",
                       re.M)


def check_one_job_per_node(out: str, names: set[str]) -> dict[str, int]:
    """Every data file done once, correctly; no node ever ran two jobs at once."""
    found = SCHEDULED.findall(out)
    assert sorted(f for f, *_ in found) == [f"data-{i}.txt" for i in range(8)], out
    assert "8 files done" in out
    per_node: dict[str, list[tuple[float, float]]] = {}
    for path, total, name, start, end in found:
        i = int(path[5:-4])
        assert int(total) == sum(i * 100 + k for k in range(10))
        per_node.setdefault(name, []).append((float(start), float(end)))
    assert set(per_node) == names, out
    for name, spans in per_node.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"node {name} ran two jobs at once:\n{out}"
    return {name: len(spans) for name, spans in per_node.items()}


def test_job_scheduler_one_job_at_a_time_on_one_node(alpha, tmp_path):
    # the node has 2 CPUs; dispy's own scheduler would run two jobs at once there
    out = run_example("job_scheduler.py", tmp_path, alpha)
    assert check_one_job_per_node(out, {"alpha"}) == {"alpha": 8}


def test_job_scheduler_one_job_at_a_time_on_two_nodes(pair, tmp_path):
    out = run_example("job_scheduler.py", tmp_path, *pair)
    counts = check_one_job_per_node(out, {"alpha", "beta"})
    assert min(counts.values()) >= 2, out  # both nodes kept busy, one job each at a time


def test_node_setup_per_node_data(pair, tmp_path):
    out = run_example("node_setup.py", tmp_path, *pair)
    shard_of = dict(re.findall(r"^node (\w+) \(127\.0\.0\.1\) gets (shard-\d)$", out, re.M))
    assert shard_of == {"alpha": "shard-0", "beta": "shard-1"} or \
        shard_of == {"alpha": "shard-1", "beta": "shard-0"}, out
    ranges = {"shard-0": range(1, 5001), "shard-1": range(5001, 10001)}
    found = re.findall(r"^divisor (\d+): (\d+) multiples, sum (\d+) in (shard-\d) on (\w+)$",
                       out, re.M)
    assert [int(d) for d, *_ in found] == list(range(2, 10)), out
    for divisor, count, total, shard, name in found:
        assert shard_of[name] == shard, f"{name} answered from {shard}:\n{out}"
        multiples = [x for x in ranges[shard] if x % int(divisor) == 0]
        assert (int(count), int(total)) == (len(multiples), sum(multiples))


def test_node_shvars_shared_by_all_jobs_of_a_node(alpha, tmp_path):
    out = run_example("node_shvars.py", tmp_path, alpha)
    m = re.search(r"^node alpha: 20 jobs in (\d+) processes, counts \[([\d, ]+)\], "
                  r"total (\d+)$", out, re.M)
    assert m, out
    # 20 jobs in (at least) 2 processes counted 1..20 on one counter: the memory is shared
    assert int(m.group(1)) >= 2
    assert [int(c) for c in m.group(2).split(", ")] == list(range(1, 21))
    assert int(m.group(3)) == sum(range(1, 21))


@pytest.mark.parametrize("two_nodes", [False, True], ids=["one-node", "two-nodes"])
def test_replace_inmem_swaps_data(two_nodes, node_factory, tmp_path):
    nodes = [node_factory("-c", "2", "--name", "alpha")]
    if two_nodes:
        nodes.append(node_factory("-c", "2", "--name", "beta"))
    out = run_example("replace_inmem.py", tmp_path, *nodes)
    names = {"alpha", "beta"} if two_nodes else {"alpha"}
    for rnd, table, power in (("round 1", "squares.txt", 2), ("round 2", "cubes.txt", 3)):
        found = re.findall(rf"^{rnd}: lookup\((\d)\) = (\d+) from (\S+) on (\w+)$", out, re.M)
        assert len(found) == 10, out
        for i, value, name, node in found:
            assert (name, int(value)) == (table, int(i) ** power), f"{rnd} lookup({i}):\n{out}"
            assert node in names
    assert sorted(re.findall(r"^setting up node (\w+) ", out, re.M)) == sorted(names)


def lookup_value():
    return value  # noqa: F821  (set by setup)


def set_value(v):
    global value
    value = v
    return 0


def test_jobs_submitted_right_after_resetup_node_see_the_new_setup(alpha):
    alloc = dispy.NodeAllocate("127.0.0.1", port=alpha.port, setup_args=(0,))
    with dispy.JobCluster(lookup_value, nodes=[alloc], port=0, setup=set_value) as cluster:
        assert cluster.submit()() == 0
        node = cluster.status().nodes[0]
        # each round is a coin toss with the bug; ten rounds make it certain to show
        for v in range(1, 11):
            alloc.setup_args = (v,)
            assert cluster.resetup_node(node) == 0
            jobs = [cluster.submit() for _ in range(2)]
            assert [job() for job in jobs] == [v, v], f"resetup with {v}"


class PhasedData(dispy.NodeAllocate):
    """The 4.15 replace_inmem.py way: allocate() picks the data for each (re)setup."""

    phase = "first"

    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        self.setup_args = (self.phase,)
        return super().allocate(cluster, ip_addr, name, cpus, avail_info, platform)


def test_resetup_node_asks_allocate_again(alpha):
    ready = threading.Semaphore(0)

    def cluster_status(status, node, job):
        if status == dispy.DispyNode.Initialized:
            ready.release()

    alloc = PhasedData("127.0.0.1", port=alpha.port)
    with dispy.JobCluster(lookup_value, nodes=[alloc], port=0, setup=set_value,
                          cluster_status=cluster_status) as cluster:
        assert ready.acquire(timeout=30)
        assert cluster.submit()() == "first"
        alloc.phase = "second"
        assert cluster.resetup_node(cluster.status().nodes[0]) == 0
        assert ready.acquire(timeout=30)  # set up again
        assert cluster.submit()() == "second"


def test_node_update_runs_once_on_every_node(pair, tmp_path):
    out = run_example("node_update.py", tmp_path, *pair)
    assert sorted(re.findall(r"^updating node (\w+) ", out, re.M)) == ["alpha", "beta"], out
    ran = re.findall(r"^(\w+): exit status (\d+): updated (\w+): python \S+ on Linux \S+ in "
                     r"(\S+)$", out, re.M)
    assert sorted(r[0] for r in ran) == ["alpha", "beta"], out
    for name, status, said, cwd in ran:
        node = pair[0] if name == "alpha" else pair[1]
        # the script ran on that node: in its directory, with the node's name as argument
        assert (status, said) == ("0", name)
        assert cwd.startswith(str(node.prefix)) and f"node-{node.port}" in cwd
    assert "2 node(s) updated" in out


def test_bounded_submit_never_exceeds_its_bound(alpha, tmp_path):
    out = run_example("bounded_submit.py", tmp_path, alpha)
    assert "60 jobs done, 0 wrong results" in out, out
    m = re.search(r"^at most (\d+) jobs pending \(bound (\d+)\); waited (\d+) times$", out, re.M)
    assert m, out
    most, bound, waits = map(int, m.groups())
    assert bound == 10 and most <= bound and waits > 0


def test_demo_shows_a_speedup_and_leaves_nothing(tmp_path):
    """`make demo`: two CPUs pay off (speedup > 1), it takes seconds, and neither its
    temporary node directory nor a recover file is left behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "demo.py")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    speedup = float(re.search(r"speedup: ([0-9.]+)", proc.stdout).group(1))
    assert speedup > 1.2, proc.stdout
    assert list(tmp.iterdir()) == [] and list(work.iterdir()) == []
