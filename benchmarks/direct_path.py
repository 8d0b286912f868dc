"""The floor of a sequential round trip without the node daemon on the path.

    python benchmarks/direct_path.py [--jobs 5000] [--runs 5]

The floors of the two ways a job takes (issue 17): through dispynode, and on a lane (a
job process's own authenticated stream to the program: node/lanes.py), each built from
the parts the real path uses, without the bookkeeping:

- the program: a user thread that submits (``call_soon_threadsafe``) and waits on a
  ``threading.Event``, an event loop (``dispy.eventloop``: uvloop) in a thread of its
  own with a real ``wire.connection.Connection`` (sealed frames, HMAC per record), the arguments and
  the result pickled with cloudpickle, a typed ``messages.Job`` / ``messages.Done``;
- the job process: a blocking loop on the same decoder (``wire.sync``), unsealing,
  unpickling, calling the function, sealing the result, over loopback TCP.

No journal, no scheduling, no node bookkeeping: those would come on top. Beside it, in
the same run, ``ProcessPoolExecutor(2)`` (the one-machine ceiling of ``bench.py``).
Prints medians of the p50 of each run. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import cloudpickle  # noqa: E402

from dispy import eventloop  # noqa: E402
from dispy.wire import codec, messages, oob  # noqa: E402
from dispy.wire.connection import Connection  # noqa: E402
from dispy.wire.sync import SyncFrameReader  # noqa: E402

KEY_OUT, KEY_IN = os.urandom(32), os.urandom(32)


def noop(x):
    return x


def job_process(sock: socket.socket, sealed: bool) -> None:
    """The job process: one frame in, one frame out, blocking (sealed over TCP to the
    program; plain over a Unix socket to a relay, as to dispynode)."""
    reader = SyncFrameReader(sock)
    sealer = None
    if sealed:
        reader.decoder.seal(KEY_OUT, codec.FULL)
        sealer = codec.Sealer(KEY_IN)
    fn = None
    while True:
        try:
            header, bufs = reader.read_frame()
        except EOFError:
            return
        if fn is None:
            fn = cloudpickle.loads(bufs[1])
        job = messages.Job.parse(header)
        args, kwargs = oob.loads(bufs[0], ())
        start = time.time()
        result = fn(*args, **kwargs)
        done = messages.Done(uid=job.uid, status=5, start_time=start, end_time=time.time())
        pieces = codec.encode(done.client_header(job.cid), [oob.dumps(result)[0], b"", b""])
        sock.sendall(b"".join(sealer.seal(pieces) if sealer else pieces))


def relay_process(port: int, job_sock: socket.socket) -> None:
    """The least a daemon on the path does: an asyncio loop that reads the program's
    sealed frames, parses each, writes it to the job process's Unix socket, and the
    result back the same way (no disk, no bookkeeping)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, up = await loop.create_connection(Connection, "127.0.0.1", port)
        up.seal(KEY_IN, KEY_OUT, codec.FULL)
        _, down = await loop.create_unix_connection(lambda: Connection(codec.FULL, local=True),
                                                    sock=job_sock)

        def to_job(header: dict, bufs: list) -> None:
            job = messages.Job.parse(header)
            down.send(job, bufs, now=True)

        def to_program(header: dict, bufs: list) -> None:
            done = messages.Done.parse(header)
            up.send(done.header(), bufs)

        down.deliver_to(to_program)
        await up.deliver_to(to_job)

    eventloop.run(main())


class Program:
    """The program's side: a loop thread with a sealed Connection to the job process."""

    def __init__(self, server: socket.socket) -> None:
        self.loop = eventloop.new_loop()
        self.waiting: dict[str, tuple[threading.Event, list]] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.conn = asyncio.run_coroutine_threadsafe(self._accept(server), self.loop).result()
        self.fn = cloudpickle.dumps(noop)
        self.first = True

    async def _accept(self, server: socket.socket) -> Connection:
        server.setblocking(False)
        sock, _ = await self.loop.sock_accept(server)
        _, conn = await self.loop.create_connection(Connection, sock=sock)
        conn.seal(KEY_OUT, KEY_IN, codec.FULL)
        conn.deliver_to(self._frame)
        return conn

    def _frame(self, header: dict, bufs: list) -> None:
        done = messages.Done.parse(header)
        event, box = self.waiting.pop(done.uid)
        box.append(oob.loads(bufs[0], ()))
        event.set()

    def _send(self, uid: str, args: bytes) -> None:
        bufs = [args, self.fn] if self.first else [args]
        self.first = False
        self.conn.send(messages.Job(cid="c", uid=uid, oob=0, timeout=None, priority=0), bufs)

    def call(self, uid: str, x: object) -> object:
        event, box = threading.Event(), []
        self.waiting[uid] = (event, box)
        args = oob.dumps(((x,), {}))[0]
        self.loop.call_soon_threadsafe(self._send, uid, args)
        if not event.wait(10):
            raise SystemExit("the job process did not answer")
        return box[0]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.conn.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _fork(fn: object, *args: object) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)  # type: ignore[operator]
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(0)
    return pid


def run_direct(jobs: int, relay: bool) -> float:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    pids = []
    if relay:
        mine, theirs = socket.socketpair(socket.AF_UNIX)
        pids.append(_fork(job_process, theirs, False))
        pids.append(_fork(relay_process, port, mine))
        mine.close()
        theirs.close()
    else:
        def connect() -> None:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            job_process(sock, True)
        pids.append(_fork(connect))
    try:
        program = Program(server)
        times = []
        for i in range(jobs + 50):
            t = time.perf_counter()
            assert program.call(str(i), i) == i
            if i >= 50:  # the first ones warm up
                times.append(time.perf_counter() - t)
        program.close()
        return statistics.median(times) * 1e3
    finally:
        server.close()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


def run_pool(jobs: int) -> float:
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        times = []
        for i in range(jobs + 50):
            t = time.perf_counter()
            assert pool.submit(noop, i).result() == i
            if i >= 50:
                times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    direct, relayed, pool = [], [], []
    for run in range(a.runs):  # alternating, as bench.py does
        direct.append(run_direct(a.jobs, relay=False))
        relayed.append(run_direct(a.jobs, relay=True))
        pool.append(run_pool(a.jobs))
        print(f"run {run + 1}: direct {direct[-1]:.3f} ms, through a relay"
              f" {relayed[-1]:.3f} ms, pool {pool[-1]:.3f} ms", flush=True)
    d, r, p = (statistics.median(x) for x in (direct, relayed, pool))
    print(f"p50 of a sequential round trip, medians of {a.runs} runs:\n"
          f"  program <-> job process (the floor of a direct path): {d:.3f} ms,"
          f" {d / p:.2f} x pool\n"
          f"  program <-> relay <-> job process (the floor of today's path): {r:.3f} ms,"
          f" {r / p:.2f} x pool\n"
          f"  ProcessPoolExecutor(2): {p:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
