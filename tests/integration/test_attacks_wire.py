"""A rogue relay between a real JobCluster and a real dispynode (issue 14, finding 1).

The relay (tests/relay.py) listens on a loopback port; the program is told the node is
there, so every byte passes through it. It does not know the secret. Forwarding works
(it is a router, and the handshake does not hide from routers); everything it adds,
alters or replays after the handshake breaks the connection before anything in it is
parsed, acted on or unpickled, on either side.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from pathlib import Path

import pytest
from relay import C2S, S2C, Link, Relay, Unit, forged_record, plain_frame

import dispy
from dispy.client.job import FINAL

pytestmark = pytest.mark.timeout(120)

SECRET = "sesame"


class Evil:
    """Unpickling this creates a file: proof that someone unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def run_when_told(go: str, x: int) -> int:
    """Runs once ``go`` exists (bounded), and counts its runs next to it."""
    import os
    import time

    deadline = time.time() + 60
    while not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.02)
    with open(go + ".runs", "a") as fh:
        fh.write(f"{x}\n")
    return 2 * x


class Finals:
    """Counts final statuses per job, as the program's callback sees them."""

    def __init__(self) -> None:
        self.seen: dict[int, list[int]] = {}
        self.lock = threading.Lock()

    def __call__(self, job: dispy.DispyJob) -> None:
        if job.status in FINAL:
            with self.lock:
                self.seen.setdefault(job.id, []).append(job.status)


def wait_until(test, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, f"{what} not met in time"
        time.sleep(0.05)


def once(fn):
    """A relay hook that acts on the first link only (reconnections pass untouched)."""
    def hook(link: Link, unit: Unit) -> bytes:
        return fn(link, unit) if link.number == 0 else unit.raw
    return hook


def run_job_through(relay: Relay, node, tmp_path: Path, during=None) -> tuple:
    """Submit one job through ``relay``; ``during()`` runs while it is running on the
    node; then let it finish. Returns (job, finals, runs)."""
    go = str(tmp_path / "go")
    finals = Finals()
    with dispy.JobCluster(run_when_told, nodes=["127.0.0.1"], node_port=relay.port, port=0,
                          secret=SECRET, callback=finals) as cluster:
        job = cluster.submit(go, 21)
        relay.wait_for(lambda: relay.find(C2S, "job"))
        if during is not None:
            during()
        Path(go).touch()
        assert job.finish.wait(60), job.status
        assert job.result == 42, (job.status, job.exception)
        cluster.wait(timeout=30)
    runs = Path(go + ".runs").read_text().split() if Path(go + ".runs").exists() else []
    return job, finals, runs


@pytest.fixture
def node(node_factory):
    # --tcp_only: the relay is a proxy on this host; the program must not move past it
    # to the node's local path (wire/localpath.py)
    return node_factory("-c", "2", "-s", SECRET, "--tcp_only")


def test_pure_forwarding_works(node, tmp_path):
    """A relay is a router: the handshake authenticates the two ends, not the path, so
    forwarding every byte unchanged works (and learns nothing: see test_handshake's
    secret-never-on-the-wire)."""
    with Relay(node.port) as relay:
        job, finals, runs = run_job_through(relay, node, tmp_path)
    assert job.status == dispy.DispyJob.Finished
    assert list(finals.seen.values()) == [[dispy.DispyJob.Finished]]
    assert runs == ["21"]
    link = relay.links[0]
    assert [u.ops() for u in link.units if u.kind == "plain"] == [["hello"], ["challenge"],
                                                                  ["auth"]]
    assert link.records(S2C)[0].ops() == ["welcome"]


def forged_done(marker: Path, header: dict) -> list:
    return [({"op": "done", "cid": header["cid"], "uid": header["uid"], "status": 11,
              "start_time": 0, "end_time": 1}, [pickle.dumps(Evil(str(marker)))])]


@pytest.mark.parametrize("form", ["plain", "wrong-tag"])
def test_forged_result_towards_the_client(node, tmp_path, caplog, form):
    """The relay slips a "done" carrying a pickle into the node's stream to the program,
    while the job runs: the program drops the link, naming why, never unpickles it,
    reconnects, and the job ends once, with the node's real result."""
    marker = tmp_path / "pwned-client"
    caplog.set_level(logging.INFO, logger="dispy")

    def inject(link: Link, unit: Unit) -> bytes:
        for header, _ in unit.frames:
            if header.get("op") == "job":
                frames = forged_done(marker, header)
                link.write(S2C, plain_frame(*frames[0]) if form == "plain"
                           else forged_record(frames))
        return unit.raw

    with Relay(node.port) as relay:
        relay.hook = once(inject)
        job, finals, runs = run_job_through(
            relay, node, tmp_path,
            during=lambda: wait_until(lambda: "bad frame from node" in caplog.text,
                                      what="client dropping the link"))
    assert not marker.exists()
    expected = ("failed its authentication tag" if form == "wrong-tag"
                else "bytes is over the limit")
    line = next(r.getMessage() for r in caplog.records if "bad frame" in r.getMessage())
    assert expected in line and "127.0.0.1" in line, line
    assert job.status == dispy.DispyJob.Finished and job.result == 42
    assert list(finals.seen.values()) == [[dispy.DispyJob.Finished]]
    assert runs == ["21"]  # not even run twice
    assert len(relay.links) >= 2  # the program reconnected


@pytest.mark.parametrize("form", ["plain", "wrong-tag"])
@pytest.mark.parametrize("op", ["job", "compute"])
def test_forged_request_towards_the_node(node, tmp_path, form, op):
    """The relay slips a job (or a computation) carrying a pickle into the program's
    stream to the node: the node drops the connection with a clear line and never
    unpickles it; the program reconnects and its job ends once."""
    marker = tmp_path / "pwned-node"
    evil = pickle.dumps(Evil(str(marker)))

    def inject(link: Link, unit: Unit) -> bytes:
        for header, _ in unit.frames:
            if header.get("op") == "job":
                forged = ({"op": op, "cid": header["cid"], "uid": "forged1", "name": "x"},
                          [evil])
                return unit.raw + (plain_frame(*forged) if form == "plain"
                                   else forged_record([forged]))
        return unit.raw

    with Relay(node.port) as relay:
        relay.hook = once(inject)
        job, finals, runs = run_job_through(
            relay, node, tmp_path,
            during=lambda: node.wait_for("dropped connection from 127.0.0.1"))
    out = node.output()
    line = next(x for x in out.splitlines() if "dropped connection from 127.0.0.1" in x)
    assert ("failed its authentication tag" if form == "wrong-tag"
            else "bytes is over the limit") in line, line
    assert not marker.exists()
    assert job.status == dispy.DispyJob.Finished and job.result == 42
    assert list(finals.seen.values()) == [[dispy.DispyJob.Finished]]
    assert runs == ["21"]


@pytest.mark.parametrize("direction", [C2S, S2C])
def test_records_replayed_into_a_fresh_session_fail(node, tmp_path, caplog, direction):
    """Records captured from one program's session (its computation, its job; the
    node's results) are replayed by the relay into the next program's connection right
    after that connection's own handshake: they fail their tag; nothing runs twice."""
    caplog.set_level(logging.INFO, logger="dispy")
    with Relay(node.port) as relay:
        job, finals, runs = run_job_through(relay, node, tmp_path)
        assert runs == ["21"]
        captured = b"".join(u.raw for u in relay.links[0].records(direction))
        first_fresh = len(relay.links)

        def replay(link: Link, unit: Unit) -> bytes:
            if link.number == first_fresh and unit.ops() == ["welcome"]:
                if direction == S2C:
                    return unit.raw + captured  # right after the fresh welcome
                link.write(C2S, captured)  # before the program's first record
            return unit.raw

        relay.hook = replay
        (tmp_path / "go").unlink()
        job2, finals2, runs2 = run_job_through(relay, node, tmp_path)
    assert job2.result == 42 and list(finals2.seen.values()) == [[dispy.DispyJob.Finished]]
    assert runs2 == ["21", "21"]  # the first job once, the second once: no replayed run
    if direction == C2S:
        node.wait_for("record 0 failed its authentication tag")
    else:
        assert "record 1 failed its authentication tag" in caplog.text  # 0 was the welcome


# ---- the same relay on dispyscheduler's client leg ------------------------------------


@pytest.mark.parametrize("towards", [S2C, C2S])
@pytest.mark.parametrize("form", ["plain", "wrong-tag"])
def test_forged_frames_on_the_schedulers_client_leg(node, scheduler_factory, tmp_path,
                                                     caplog, towards, form):
    """Between a SharedJobCluster and dispyscheduler: a forged result towards the
    program, or a forged job towards the scheduler, both carrying a pickle, drop the
    connection with a clear line; nothing is unpickled; the job ends once."""
    sched = scheduler_factory("--cluster_secret", SECRET, "--node_secret", SECRET,
                              "--tcp_only")  # (the relay is a proxy on this host)
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Evil(str(marker)))
    caplog.set_level(logging.INFO, logger="dispy")

    def inject(link: Link, unit: Unit) -> bytes:
        for header, _ in unit.frames:
            if header.get("op") == "job":
                forged = (({"op": "done", "cid": header["cid"], "uid": header["uid"],
                            "status": 11, "start_time": 0, "end_time": 1}, [evil])
                          if towards == S2C else
                          ({"op": "job", "cid": header["cid"], "uid": "forged1"}, [evil]))
                data = plain_frame(*forged) if form == "plain" else forged_record([forged])
                if towards == S2C:
                    link.write(S2C, data)
                else:
                    return unit.raw + data
        return unit.raw

    go = str(tmp_path / "go")
    finals = Finals()
    with Relay(sched.port) as relay:
        relay.hook = once(inject)
        with dispy.SharedJobCluster(run_when_told,
                                    nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                    scheduler_node="127.0.0.1", scheduler_port=relay.port,
                                    secret=SECRET, callback=finals) as cluster:
            job = cluster.submit(go, 21)
            if towards == S2C:
                wait_until(lambda: "bad frame" in caplog.text, what="program dropping the link")
            else:
                sched.wait_for("dropped connection from")
            Path(go).touch()
            assert job.finish.wait(60), job.status
            cluster.wait(timeout=30)
    expected = "failed its authentication tag" if form == "wrong-tag" else "over the limit"
    if towards == S2C:
        line = next(r.getMessage() for r in caplog.records if "bad frame" in r.getMessage())
    else:
        line = next(x for x in sched.output().splitlines() if "dropped connection from" in x)
    assert expected in line, line
    assert not marker.exists()
    assert job.status == dispy.DispyJob.Finished and job.result == 42
    assert list(finals.seen.values()) == [[dispy.DispyJob.Finished]]
    assert Path(go + ".runs").read_text().split() == ["21"]
