"""A node simulator: one process that speaks the real protocol as N dispynodes.

Each simulated node listens on its own port of 127.0.0.1, authenticates clients with the
real handshake (``dispy.wire``), accepts computations, files and setup, and answers each
job at once (or after ``--service`` seconds) with a fixed result, so the client and
dispyscheduler can be measured at 10, 100 or 1 000 nodes on one machine. It pulses each
client as dispynode does: every ``pulse_interval`` its computation asked for, else
every ZOMBIE_PULSE seconds (dispynode's default ``--zombie_interval`` over 5). It runs
no user code and unpickles nothing.

    python benchmarks/nodesim.py --nodes 1000 --cpus 64 [--service 0.0] [--secret S]

Prints ``PORTS <first> <last>`` (the ports are consecutive) once every node listens.
Standard input takes commands: ``vanish K`` makes K nodes (the last ones) drop their
connections and stop listening (a node lost at once), ``quit`` ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cloudpickle  # noqa: E402

from dispy import eventloop  # noqa: E402
from dispy.wire import auth, connection  # noqa: E402
from dispy.wire.codec import Limits  # noqa: E402
from dispy.wire.connection import Connection, ConnectionClosed  # noqa: E402
from dispy.wire.handshake import HandshakeError, server_handshake  # noqa: E402

FINISHED, CANCELLED = 11, 8
RESULT = cloudpickle.dumps(None)
#: seconds between pulses when no computation asked for a pulse_interval (dispynode:
#: --zombie_interval 60 minutes, 5 pulses per interval)
ZOMBIE_PULSE = 720.0
#: what a pulse says of the node (dispynode measures it; a simulated node has all free)
AVAIL = {"cpu": 100.0, "memory": float(1 << 34), "disk": float(1 << 40), "swap": 100.0}


class SimNode:
    def __init__(self, port: int, cpus: int, secret: str, service: float) -> None:
        self.port = port
        self.cpus = cpus
        self.key = auth.derive_key(secret)
        self.service = service
        self.node_id = uuid.uuid4().hex
        self.server: asyncio.AbstractServer | None = None
        self.conns: set[Connection] = set()
        self.jobs = 0
        #: jobs waiting out their service time
        self.running = 0

    def info(self) -> dict[str, Any]:
        return {"name": f"sim-{self.port}", "version": "sim", "port": self.port,
                "node_id": self.node_id, "ip_addr": "127.0.0.1", "cpus": self.cpus,
                "busy": 0, "busy_with": None, "platform": "simulated",
                "avail_info": {"cpu": 10.0, "memory": 1 << 30, "disk": 1 << 34, "swap": 0.0},
                "accepting": True}

    async def start(self) -> None:
        self.server = await connection.serve(self.serve, "127.0.0.1", self.port)

    async def serve(self, conn: Connection) -> None:
        try:
            hello = await server_handshake(
                conn, lambda role: self.key if role == "client" else None,
                lambda hello: self.info(), 10.0, name=f"sim {self.port}",
                identity={"node_id": self.node_id}, limits=Limits(max_buffer=1 << 31))
        except (HandshakeError, ConnectionClosed, asyncio.TimeoutError, OSError):
            return
        if "lane" in hello:  # no job processes here: no lanes (as a node that has none)
            conn.close()
            return
        self.conns.add(conn)
        loop = asyncio.get_running_loop()
        every = [ZOMBIE_PULSE]  # the shortest pulse_interval this client's computations asked
        pulses = asyncio.ensure_future(self.pulse(conn, every))
        try:
            while True:
                header, _ = await conn.recv()
                op = header.get("op")
                if op == "compute":
                    asked = header.get("pulse_interval")
                    if isinstance(asked, (int, float)) and 0 < asked < every[0]:
                        every[0] = float(asked)
                        pulses.cancel()  # (sleeping the old interval)
                        pulses = asyncio.ensure_future(self.pulse(conn, every))
                elif op == "job":
                    self.jobs += 1
                    done = self.done_frame(header)
                    if self.service:
                        self.running += 1
                        loop.call_later(self.service, self.finish, conn, done)
                    else:
                        conn.send(*done)
                elif op == "setup":
                    conn.send({"op": "setup_done", "cid": header.get("cid"), "ok": True,
                               "cpus": self.cpus})
                elif op in ("file", "files_check") and header.get("reply"):
                    conn.send({"op": "reply", "reply": header["reply"], "ok": True,
                               "paths": [f.get("path") for f in header.get("files", ())]})
                elif op == "close":
                    conn.send({"op": "closed", "cid": header.get("cid")})
                elif op == "jobs_query":
                    conn.send({"op": "reply", "reply": header.get("reply"), "unknown": []})
        except (ConnectionClosed, OSError):
            pass
        finally:
            pulses.cancel()
            self.conns.discard(conn)

    def finish(self, conn: Connection, done: tuple[dict, list]) -> None:
        self.running -= 1
        conn.send(*done)

    async def pulse(self, conn: Connection, every: list[float]) -> None:
        """Pulse the client as dispynode does (it answers each: a client that does not
        is hung); the client reads each as a frame of its own, as from a real node."""
        while True:
            await asyncio.sleep(every[0])
            if not conn.send({"op": "pulse", "busy": self.running, "avail_info": AVAIL}):
                return

    @staticmethod
    def done_frame(header: dict) -> tuple[dict, list]:
        now = time.time()
        return ({"op": "done", "uid": header.get("uid"), "cid": header.get("cid"),
                 "status": FINISHED, "start_time": now, "end_time": now, "text": True},
                [RESULT, b"", b""])

    def vanish(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()


def free_blocks(n: int) -> Iterator[int]:
    """First ports such that ``n`` consecutive ports are free on 127.0.0.1."""
    for base in range(20000, 60000 - n, 97):
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        yield base


async def listen(n: int, cpus: int, secret: str, service: float) -> list[SimNode]:
    """``n`` nodes listening on consecutive ports. A simulator started at the same moment
    (scale.py --ratio starts two) may take a block this one found free: then some of
    these nodes cannot listen, and the next free block is tried."""
    for base in free_blocks(n):
        nodes = [SimNode(base + i, cpus, secret, service) for i in range(n)]
        try:
            for node in nodes:
                await node.start()
            return nodes
        except OSError:
            for node in nodes:
                if node.server is not None:
                    node.server.close()
    raise SystemExit("nodesim: no block of free ports")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--cpus", type=int, default=64)
    ap.add_argument("--service", type=float, default=0.0)
    ap.add_argument("--secret", default="")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nodes = await listen(a.nodes, a.cpus, a.secret, a.service)
    print(f"PORTS {nodes[0].port} {nodes[-1].port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        if line[0] == "vanish":
            for node in nodes[-int(line[1]):]:
                node.vanish()
            print(f"VANISHED {line[1]}", flush=True)
        elif line[0] == "jobs":
            print(f"JOBS {sum(n.jobs for n in nodes)}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    eventloop.run(main())
