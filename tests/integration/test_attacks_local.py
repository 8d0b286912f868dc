"""Attacks from the same machine, or by an authenticated peer naming things on disk.

A node or scheduler keeps a tree under a shared directory (/tmp by default); another
local user must not be able to plant it, and ids and file names sent by peers must
never reach outside it. Frames here are crafted with the project's own framing by
``RawClient``, which authenticates as a client would and then sends what it is told.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import _spawn, free_port, start_node

import dispy
from dispy.wire.connection import Connection
from dispy.wire.handshake import client_handshake
from dispy.wire.sessions import new_session_key

pytestmark = pytest.mark.timeout(90)

NOBODY = 65534


class RawClient:
    """An authenticated connection that sends frames exactly as given.

    The one place these tests speak the wire protocol: when the framing changes, only
    ``connect``, ``send`` and ``recv`` need to follow."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.seen: list[dict] = []

    @classmethod
    async def connect(cls, port: int, client_id: str, secret: str = "") -> RawClient:
        conn = await Connection.open("127.0.0.1", port, None, 10)
        await client_handshake(conn, secret, {"client_id": client_id, "client_name":
                                              "attacker", "session": new_session_key()}, 10)
        return cls(conn)

    async def send(self, header: dict, bufs: list | tuple = ()) -> None:
        self.conn.send(header, bufs)
        await self.conn.drain()

    async def recv(self, match: Any, timeout: float = 20) -> dict:
        """The first frame (from now or already seen) for which ``match`` is true."""
        for header in self.seen:
            if match(header):
                self.seen.remove(header)
                return header
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no matching frame; saw {self.seen}"
            header, _ = await self.conn.recv(left)
            if match(header):
                return header
            self.seen.append(header)

    async def barrier(self, token: str) -> None:
        """Every frame sent so far has been handled (the node answers in order)."""
        self.conn.send({"op": "jobs_query", "uids": [], "reply": token})
        await self.recv(lambda h: h.get("reply") == token)

    async def close(self) -> None:
        self.conn.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def file_frame(cid: str, path: str, data: bytes, offset: int = 0, final: bool = True,
               size: int | None = None, **extra: Any) -> tuple[dict, list[bytes]]:
    """A "file" frame (header, buffers) as a client sends a chunk of a file."""
    return ({"op": "file", "cid": cid, "path": path,
             "size": len(data) if size is None else size, "mtime": time.time(),
             "mode": 0o644, "offset": offset, "final": final, **extra}, [data])


def double(x):
    return 2 * x


def node_root(node) -> Path:
    return node.prefix / "dispy" / f"node-{node.port}"


def still_serves(node) -> None:
    with dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=node.port, port=0) as c:
        assert c.submit(21)() == 42


def files_under(path: Path) -> set[str]:
    return {os.path.relpath(p, path) for p in glob.glob(str(path / "**"), recursive=True)}


# ---- finding 2: the node's tree in a shared directory ---------------------------------


def wait_exit(proc, timeout: float = 30) -> int:
    return proc.proc.wait(timeout)


def _plant(tree: Path, how: str, outside: Path) -> None:
    """Make ``tree`` (prefix/dispy/<daemon>-PORT) as another local user could."""
    if how == "dispy_symlink":
        outside.mkdir()
        tree.parent.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(outside, tree.parent)
        return
    tree.mkdir(parents=True)
    os.chmod(tree.parent, 0o700)
    os.chmod(tree, 0o700)
    if how == "dispy_other_owner":
        os.chown(tree.parent, NOBODY, NOBODY)
    elif how == "tree_other_owner":
        os.chown(tree, NOBODY, NOBODY)
    elif how == "tree_world_writable":
        os.chmod(tree, 0o777)
    elif how == "dispy_group_writable":
        os.chmod(tree.parent, 0o770)


PLANTED = {
    "dispy_other_owner": "owned by uid 65534",
    "tree_other_owner": "owned by uid 65534",
    "tree_world_writable": "writable by group or others",
    "dispy_group_writable": "writable by group or others",
    "dispy_symlink": "symbolic link",
}


@pytest.mark.parametrize("how", sorted(PLANTED))
def test_node_refuses_a_tree_another_user_could_change(tmp_path, how):
    port = free_port()
    tree = tmp_path / f"node-{port}" / "dispy" / f"node-{port}"
    _plant(tree, how, tmp_path / "elsewhere")
    node = start_node(tmp_path, "-c", "1", port=port, wait=False)
    try:
        assert wait_exit(node) != 0
        out = node.output()
        assert PLANTED[how] in out and "Traceback" not in out, out
    finally:
        node.stop()
    assert not (tmp_path / "elsewhere").exists() or not os.listdir(tmp_path / "elsewhere")


@pytest.mark.parametrize("name", ["node.pid", "results.log"])
def test_node_follows_no_symlink_in_its_tree(tmp_path, name):
    port = free_port()
    tree = tmp_path / f"node-{port}" / "dispy" / f"node-{port}"
    tree.mkdir(parents=True, mode=0o700)
    target = tmp_path / "precious"
    target.write_text("root's own file\n")
    os.symlink(target, tree / name)
    node = start_node(tmp_path, "-c", "1", port=port, wait=False)
    try:
        deadline = time.monotonic() + 30
        while node.proc.poll() is None and "serving" not in node.output():
            assert time.monotonic() < deadline, node.output()
            time.sleep(0.05)
        if node.proc.poll() is None:  # it may serve (the link put aside) ...
            still_serves(node)
        else:  # ... or refuse, saying why
            assert "symbolic link" in node.output() and "Traceback" not in node.output()
    finally:
        node.stop()
    assert target.read_text() == "root's own file\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_node_tree_and_results_are_private(node):
    root = node_root(node)
    for path in (root.parent, root):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    still_serves(node)
    kept = [root / "results.log"]
    assert kept[0].exists()
    for path in kept:
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("how", ["dispy_other_owner", "tree_world_writable", "dispy_symlink"])
def test_scheduler_refuses_a_tree_another_user_could_change(tmp_path, how):
    port = free_port()
    tree = tmp_path / f"scheduler-{port}" / "dispy" / f"scheduler-{port}"
    _plant(tree, how, tmp_path / "elsewhere")
    sched = _spawn(tmp_path, "dispyscheduler", port,
                   ["-i", "127.0.0.1", "--scheduler_port", str(port), "-p", str(free_port())],
                   None)
    try:
        assert wait_exit(sched) != 0
        out = sched.output()
        assert PLANTED[how] in out and "Traceback" not in out, out
    finally:
        sched.stop()


def test_scheduler_tree_is_private(scheduler_factory, node, tmp_path):
    sched = scheduler_factory()
    (tmp_path / "data.txt").write_text("secret data")
    with dispy.SharedJobCluster(double, nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                scheduler_node="127.0.0.1", scheduler_port=sched.port,
                                depends=["data.txt"]) as c:
        assert c.submit(2)() == 4
        top = sched.prefix / "dispy"
        dirs = [Path(p) for p in glob.glob(str(top / "**"), recursive=True) if os.path.isdir(p)]
        assert len(dirs) >= 3  # dispy/, scheduler-PORT/, the client's ...
        for path in dirs:
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


# ---- finding 4: ids and file names from peers ------------------------------------------


def test_node_keeps_crafted_ids_and_names_inside_its_tree(node, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    root = node_root(node)
    clients = root / "clients"
    before = files_under(tmp_path / "victim")

    async def attack() -> None:
        # computation ids: absolute, and climbing out of the client's directory
        cl = await RawClient.connect(node.port, "c1")
        for n, cid in enumerate([str(victim), os.path.relpath(victim, clients / "c1"),
                                 "../../x", ".."]):
            await cl.send({"op": "compute", "cid": cid, "name": "evil", "dest_path": None,
                           "kind": "function"}, [b""])
            await cl.send(*file_frame(cid, "planted.txt", b"x"))
            await cl.send({"op": "close", "cid": cid})  # refused: not a valid id
            await cl.barrier(f"a{n}")
        await cl.close()
        # client ids climbing out of clients/ (a session's directory is named by the node,
        # never by the id a client claims, so these only name the session in logs)
        for n, client_id in enumerate([os.path.relpath(tmp_path / "outside", clients),
                                       "../x", "..", str(tmp_path / "abs"), "a/b"]):
            cl = await RawClient.connect(node.port, client_id)
            await cl.send({"op": "compute", "cid": "c", "name": "evil", "dest_path": None,
                           "kind": "function"}, [b""])
            await cl.send(*file_frame("c", "planted.txt", b"x"))
            await cl.send({"op": "close", "cid": "c"})
            await cl.recv(lambda h: h.get("op") == "closed")
            await cl.barrier(f"b{n}")
            await cl.close()
        # file names: climbing out, absolute
        cl = await RawClient.connect(node.port, "c2")
        await cl.send({"op": "compute", "cid": "ok", "name": "fine", "dest_path": None,
                       "kind": "function"}, [b""])
        for n, path in enumerate(["../../../../escape.txt", str(tmp_path / "abs.txt"),
                                  "a/../../../x.txt", "..", "/"]):
            await cl.send(*file_frame("ok", path, b"x", reply=f"f{n}"))
            answer = await cl.recv(lambda h, n=n: h.get("reply") == f"f{n}")
            assert answer["ok"] is False
        await cl.send({"op": "close", "cid": "ok"})
        await cl.recv(lambda h: h.get("op") == "closed")
        await cl.close()

    run(attack())
    assert files_under(victim) == before
    assert not (tmp_path / "outside").exists() and not (tmp_path / "abs").exists()
    assert not (tmp_path / "abs.txt").exists()
    assert not glob.glob(str(tmp_path / "**" / "escape.txt"), recursive=True)
    out = node.output()
    assert "is not a valid id" in out  # the request record refused those cids
    assert "refused file" in out
    # nothing was written anywhere in the node's prefix outside clients/<valid id>/
    planted = glob.glob(str(node.prefix / "**" / "planted.txt"), recursive=True)
    assert planted == [], planted
    still_serves(node)


def test_node_keeps_crafted_dest_paths_inside_its_dest_tree(node, tmp_path):
    """A dest_path names a folder that outlives the program (dest/<client address>/):
    one that climbs out of it, or is absolute, is refused; nothing lands elsewhere."""
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = node_root(node) / "dest" / "127.0.0.1"
    evil = ["../../../../victim", "..", "../..", "a/../../../b", str(victim), "/", "a/./../..",
            os.path.relpath(victim, dest)]

    async def attack() -> None:
        cl = await RawClient.connect(node.port, "c3")
        for n, dest_path in enumerate(evil):
            cid = f"d{n}"
            await cl.send({"op": "compute", "cid": cid, "name": "evil", "dest_path": dest_path,
                           "kind": "function"}, [b""])
            answer = await cl.recv(lambda h, cid=cid: h.get("op") == "setup_done"
                                   and h.get("cid") == cid)
            assert answer.get("ok") is not True, dest_path
            await cl.send(*file_frame(cid, "planted.txt", b"x"))
            await cl.barrier(f"d{n}")
        await cl.close()

    run(attack())
    planted = glob.glob(str(tmp_path / "**" / "planted.txt"), recursive=True)
    assert planted == [] and list(victim.iterdir()) == [], planted
    still_serves(node)


def test_scheduler_keeps_crafted_ids_and_names_inside_its_tree(scheduler_factory, node):
    sched = scheduler_factory()
    victim = sched.prefix / "victim.txt"
    victim.write_text("another program's file")
    allocs = [{"host": "127.0.0.1", "port": node.port, "setup_args": 0}]

    async def attack() -> None:
        for client_id, cid in [("..", ".."), ("x", ".."), ("..", "c"), ("y", "/tmp/abs"),
                               ("z", "../../..")]:
            cl = await RawClient.connect(sched.port, client_id)
            await cl.send({"op": "compute", "cid": cid, "name": "evil", "allocs": allocs,
                           "files": []}, [b"", b""])
            await cl.send(*file_frame(cid, "planted.txt", b"x"))
            await cl.send(*file_frame(cid, "jobfile.txt", b"x", job=".."))
            await cl.send({"op": "close", "cid": cid})  # refused when the cid is invalid
            await cl.barrier(f"s-{client_id}-{len(cid)}")
            await cl.close()
        # a valid computation, with file names and job uids that climb out
        cl = await RawClient.connect(sched.port, "w")
        await cl.send({"op": "compute", "cid": "ok", "name": "fine", "allocs": [
            {**allocs[0], "depends": ["../../../victim.txt"]}],
            "files": ["/etc/hostname"]}, [b"", b""])
        await cl.recv(lambda h: h.get("op") == "refused" and h.get("cid") == "ok")
        await cl.send({"op": "compute", "cid": "ok2", "name": "fine", "allocs": allocs,
                       "files": []}, [b"", b""])
        for n, (path, extra) in enumerate([("../../../../escape.txt", {}),
                                           ("f.txt", {"job": "../.."}),
                                           ("f.txt", {"node": ["127.0.0.1", 1],
                                                      "xfer": "../../.."})]):
            await cl.send(*file_frame("ok2", path, b"x", reply=f"f{n}", **extra))
        await cl.send({"op": "close", "cid": "ok2"})
        await cl.recv(lambda h: h.get("op") == "closed" and h.get("cid") == "ok2")
        await cl.close()

    run(attack())
    assert victim.read_text() == "another program's file"
    planted = glob.glob(str(sched.prefix / "**" / "planted.txt"), recursive=True)
    assert planted == [], planted
    assert not glob.glob(str(sched.prefix / "**" / "escape.txt"), recursive=True)
    assert not (sched.prefix / "jobfile.txt").exists()
    out = sched.output()
    assert "is not a valid id" in out and "refused file" in out
    assert sched.proc.poll() is None
    with dispy.SharedJobCluster(double, nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                scheduler_node="127.0.0.1", scheduler_port=sched.port) as c:
        assert c.submit(4)() == 8


# ---- finding 8: max_file_size counts the bytes sent -----------------------------------


def test_node_max_file_size_counts_bytes_sent(node_factory):
    node = node_factory("-c", "1", "--max_file_size", "1k")

    async def attack() -> list[dict]:
        cl = await RawClient.connect(node.port, "c1")
        await cl.send({"op": "compute", "cid": "c", "name": "big", "dest_path": None,
                       "kind": "function"}, [b""])
        answers = []
        # one chunk far bigger than the 10 bytes declared
        await cl.send(*file_frame("c", "one.bin", b"x" * 5000, size=10, reply="r1"))
        answers.append(await cl.recv(lambda h: h.get("reply") == "r1"))
        # chunks that each fit, but not together
        await cl.send(*file_frame("c", "two.bin", b"x" * 800, size=10, final=False))
        await cl.send(*file_frame("c", "two.bin", b"x" * 800, size=10, offset=800, reply="r2"))
        answers.append(await cl.recv(lambda h: h.get("reply") == "r2"))
        # a chunk far past the end (a sparse file is no way around it)
        await cl.send(*file_frame("c", "three.bin", b"x", size=10, offset=1 << 30, reply="r3"))
        answers.append(await cl.recv(lambda h: h.get("reply") == "r3"))
        await cl.send(*file_frame("c", "fits.bin", b"x" * 1000, reply="r4"))
        answers.append(await cl.recv(lambda h: h.get("reply") == "r4"))
        await cl.send({"op": "close", "cid": "c"})
        await cl.recv(lambda h: h.get("op") == "closed")
        await cl.close()
        return answers

    answers = run(attack())
    assert [a["ok"] for a in answers] == [False, False, False, True], answers
    # refused for its size, or (a chunk past the declared end) by the request record
    assert all("max_file_size" in a["reason"] or "past 'size'" in a["reason"]
               for a in answers[:3])
    for name in ("one.bin", "two.bin", "three.bin"):
        assert not glob.glob(str(node.prefix / "**" / name), recursive=True), name


def test_scheduler_max_file_size_counts_bytes_sent(scheduler_factory, node):
    sched = scheduler_factory("--max_file_size", "1k")
    allocs = [{"host": "127.0.0.1", "port": node.port, "setup_args": 0}]

    async def attack() -> dict:
        cl = await RawClient.connect(sched.port, "c1")
        await cl.send({"op": "compute", "cid": "c", "name": "big", "allocs": allocs,
                       "files": ["one.bin"]}, [b"", b""])
        # declared under the limit; the bytes sent are not
        await cl.send(*file_frame("c", "one.bin", b"x" * 800, size=1000, final=False))
        await cl.send(*file_frame("c", "one.bin", b"x" * 800, size=1000, offset=800))
        await cl.send({"op": "schedule", "cid": "c"})
        answer = await cl.recv(lambda h: h.get("op") in ("refused", "scheduled", "waiting"))
        await cl.send({"op": "close", "cid": "c"})
        await cl.close()
        return answer

    answer = run(attack())
    assert answer["op"] == "refused" and "max_file_size" in answer["reason"], answer
    assert not glob.glob(str(sched.prefix / "**" / "one.bin"), recursive=True)
    assert sched.proc.poll() is None


# ---- finding 10: files others could read ----------------------------------------------


def test_client_recover_file_is_private(node, tmp_path):
    old = os.umask(0o022)
    try:
        with dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=node.port, port=0,
                              recover_file="rec.db") as c:
            assert c.submit(1)() == 2
            paths = [tmp_path / n for n in ("rec.db", "rec.db-wal", "rec.db-shm")]
            assert paths[0].exists()
            for path in paths:
                if path.exists():
                    assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        os.umask(old)


# ---- finding 11: the job socket ---------------------------------------------------------


def _setup_sentinel():
    """Runs in the computation host: a process of its own that must survive."""
    global SENTINEL
    import subprocess
    SENTINEL = subprocess.Popen(["sleep", "60"]).pid
    return 0


def _claim_pid(claim):
    """A job that connects to the job socket as a job process would, with the real
    token, claiming a pid the host did not fork; reports whether the sentinel lives."""
    import gc
    import socket
    import time

    from dispy.wire.sync import send_frame_sync

    # the host runs as __main__: find its ComputationHost by name
    host = next(o for o in gc.get_objects() if type(o).__name__ == "ComputationHost")
    pid = SENTINEL if claim == "sentinel" else int(claim)  # noqa: F821 (setup's global)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(host.jobs_path)
        send_frame_sync(sock, {"op": "hello", "token": host.token, "pid": pid,
                               "link": "forged"})
    # the host kills a process it is told to reap after 2 s; give it twice that
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{SENTINEL}/stat") as fh:  # noqa: F821
                if fh.read().split(")")[1].split()[0] == "Z":
                    return ("dead", SENTINEL)  # noqa: F821
        except FileNotFoundError:
            return ("dead", SENTINEL)  # noqa: F821
        time.sleep(0.1)
    return ("alive", SENTINEL)  # noqa: F821


@pytest.mark.parametrize("claim", ["sentinel", "0"])
def test_job_socket_claims_no_pid_the_host_did_not_fork(node, claim):
    sentinel = None
    cluster = dispy.JobCluster(_claim_pid, nodes=["127.0.0.1"], node_port=node.port, port=0,
                               setup=_setup_sentinel)
    try:
        for _ in range(2):  # the host and its job processes live on
            job = cluster.submit(claim)
            assert job.finish.wait(30), node.output()
            assert job.result is not None, (job.status, job.exception, node.output())
            verdict, sentinel = job.result
            assert verdict == "alive"
            assert psutil.pid_exists(sentinel)
    finally:
        cluster.close(timeout=10, terminate=True)
        if sentinel is not None and psutil.pid_exists(sentinel):
            proc = psutil.Process(sentinel)
            if proc.name() == "sleep":
                os.kill(sentinel, signal.SIGKILL)


# ---- "no secret" warnings -------------------------------------------------------------


def test_scheduler_without_secret_warns(scheduler_factory):
    sched = scheduler_factory()
    out = sched.output()
    assert "can run code on its nodes" in out and "read its programs' jobs" in out
    with_secret = scheduler_factory("--cluster_secret", "s")
    assert "can run code on its nodes" not in with_secret.output()


@pytest.mark.parametrize("secret", ["", "sesame"])
def test_client_without_secret_warns_once(node_factory, caplog, secret):
    node = node_factory("-c", "1", *(("-s", secret) if secret else ()))
    caplog.set_level(logging.WARNING, logger="dispy")
    with dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          secret=secret) as c:
        assert c.submit(1)() == 2
        assert c.submit(2)() == 4
    warned = [r for r in caplog.records if "no secret" in r.getMessage()]
    if secret:
        assert warned == []
    else:
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert "can run code" in warned[0].getMessage()


def test_shared_client_without_secret_warns_once(scheduler_factory, node, caplog):
    sched = scheduler_factory()
    caplog.set_level(logging.WARNING, logger="dispy")
    with dispy.SharedJobCluster(double, nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                scheduler_node="127.0.0.1", scheduler_port=sched.port) as c:
        assert c.submit(3)() == 6
    warned = [r for r in caplog.records if "no secret" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "scheduler" in warned[0].getMessage()
