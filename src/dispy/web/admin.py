"""dispyadmin: every node on the LAN in a browser, and control of those it may administer.

Nodes are found by their announcements and by a ``discover`` broadcast every
``ping_interval`` (and on "add node", to the address given). Each node found is tried
with the admin secrets known; a node whose ``--admin_secret`` matches is polled every
``poll_interval`` for its details (CPUs, jobs done, CPU time, memory, service times...)
and can be controlled. Other nodes are shown with what their announcement says: address,
name and CPUs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..eventloop import within
from ..wire import discovery, netif
from ..wire.discoverymsg import DiscoveryMessage, NodeAnnouncement
from .admin_link import AdminError, AdminLink
from .server import WebServer

log = logging.getLogger("dispy.admin")

PAGES = {"": "admin.html", "admin": "admin.html", "admin_node": "admin_node.html"}
HISTORY = 600


@dataclass
class AdminOptions:
    secret: str = ""
    hosts: list[str] = field(default_factory=list)
    http_host: str = "localhost"
    http_port: int = 8181
    info_port: int = 51347
    node_port: int = 51348
    poll_interval: float = 60.0
    ping_interval: float = 600.0
    ipv4_udp_multicast: bool = False
    keyfile: str | None = None
    certfile: str | None = None
    debug: bool = False
    daemon: bool = False


@dataclass
class NodeRecord:
    ip: str
    port: int
    name: str = ""
    cpus: int = 0
    found: float = field(default_factory=time.time)
    heard: float = field(default_factory=time.time)
    updated: float | None = None
    secret: str | None = None
    link: AdminLink | None = None
    info: dict | None = None
    error: str | None = None
    #: (time, jobs done, CPU used %, memory available)
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))

    @property
    def key(self) -> str:
        return f"{self.ip}:{self.port}"

    def view(self) -> dict[str, Any]:
        info = self.info or {}
        avail = info.get("avail_info") if self.secret else None
        return {
            "key": self.key, "ip_addr": self.ip, "port": self.port,
            "name": info.get("name", self.name), "cpus": info.get("cpus", self.cpus),
            "admin": self.secret is not None,
            "max_cpus": info.get("max_cpus"), "busy": info.get("busy"),
            "jobs_done": info.get("jobs_done"), "cpu_time": info.get("cpu_time"),
            "avail": avail, "service": info.get("service"),
            "service_text": info.get("service_text"), "serve": info.get("serve"),
            "served": info.get("served"), "owner": info.get("owner"),
            "clients": info.get("clients"), "updated": self.updated, "found": self.found,
            "error": self.error, "version": info.get("version"),
        }


class AdminServer:
    def __init__(self, opts: AdminOptions) -> None:
        self.opts = opts
        self.secrets: list[str] = [opts.secret] if opts.secret else []
        self.nodes: dict[str, NodeRecord] = {}
        self.ifs = netif.select(opts.hosts or None)
        self.udp: discovery.DiscoveryProtocol | None = None
        self.web = WebServer("dispyadmin", opts.http_host, opts.http_port, PAGES,
                             opts.keyfile, opts.certfile)
        self.stop_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._routes()

    # ---- running ----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            self.udp = await discovery.open_endpoint(
                self.opts.info_port, True, discovery.records(self._on_datagram, "dispyadmin"),
                "dispyadmin", self.ifs)
        except OSError as exc:
            raise SystemExit(f"dispyadmin: cannot use UDP port {self.opts.info_port}:"
                             f" {exc.strerror}") from None
        try:
            await self.web.start()
        except OSError as exc:
            self.udp.close()
            raise SystemExit(f"dispyadmin: cannot serve on {self.web.host} port"
                             f" {self.opts.http_port}: {exc.strerror}") from None
        self.web.announce()
        self._spawn(self._poller())
        self._spawn(self._pinger())
        self._spawn(self._pusher())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for rec in self.nodes.values():
            if rec.link is not None:
                rec.link.close()
        if self.udp is not None:
            self.udp.close()
        await self.web.stop()

    def request_stop(self) -> None:
        self.stop_event.set()

    # ---- finding nodes ----------------------------------------------------------------

    def scan(self, target: tuple[str, int] | None = None) -> None:
        """Ask nodes to announce themselves: all (broadcast) or the one at ``target``."""
        if self.udp is None:
            return
        msg = discovery.discover(self.opts.info_port, "dispyadmin")
        if target is not None:
            self.udp.send(msg, target)
            return
        discovery.send_to_lan(self.udp, msg, self.opts.node_port, self.ifs,
                              self.opts.ipv4_udp_multicast)

    def _on_datagram(self, msg: DiscoveryMessage, addr: tuple) -> None:
        node = discovery.announced_node(msg, addr)
        if node is None or not isinstance(msg, NodeAnnouncement):
            return
        ip, port = node
        key = f"{ip}:{port}"
        rec = self.nodes.get(key)
        if rec is None:
            rec = self.nodes[key] = NodeRecord(ip, port)
            log.info("found node %s", key)
            self._spawn(self._pair(rec, list(self.secrets)))
        if msg.name is not None:
            rec.name = msg.name
        if msg.cpus is not None:
            rec.cpus = msg.cpus
        rec.heard = time.time()
        self._changed.set()

    async def _pair(self, rec: NodeRecord, secrets: list[str]) -> bool:
        """Try ``secrets`` on a node that has none matched yet; True when one does."""
        for secret in secrets:
            if rec.secret is not None:
                return True
            link = AdminLink(rec.ip, rec.port, secret, self.opts.certfile, self.opts.keyfile)
            try:
                info = await link.info()
            except AdminError as exc:
                rec.error = str(exc)
                link.close()
                continue
            rec.secret, rec.link, rec.error = secret, link, None
            self._record(rec, info)
            log.info("node %s: admin secret matches", rec.key)
            return True
        self._changed.set()
        return False

    def _record(self, rec: NodeRecord, info: dict) -> None:
        rec.info = info
        rec.updated = time.time()
        rec.cpus = info.get("cpus", rec.cpus)
        avail = info.get("avail_info") or {}
        rec.history.append((rec.updated, info.get("jobs_done", 0),
                            round(100.0 - avail.get("cpu", 100.0), 1), avail.get("memory")))
        self._changed.set()

    async def poll(self) -> None:
        """Get the latest details of every node whose admin secret matched."""
        recs = [r for r in self.nodes.values() if r.link is not None]
        await asyncio.gather(*(self._poll_one(r) for r in recs))

    async def _poll_one(self, rec: NodeRecord) -> None:
        assert rec.link is not None
        try:
            self._record(rec, await rec.link.info())
            rec.error = None
        except AdminError as exc:
            rec.error = str(exc)
            self._changed.set()

    async def _poller(self) -> None:
        while True:
            try:
                await within(self._wake.wait(), self.opts.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.poll()

    async def _pinger(self) -> None:
        while True:
            self.scan()
            await asyncio.sleep(self.opts.ping_interval)

    async def _pusher(self) -> None:
        """Push the nodes to the pages when something changed (at most 4 times a second)."""
        while True:
            await self._changed.wait()
            await asyncio.sleep(0.25)
            self._changed.clear()
            self.web.hub.publish("tick", self.state())

    def state(self) -> dict[str, Any]:
        views = [r.view() for r in self.nodes.values()]
        return {
            "time": time.time(), "nodes": views, "poll_interval": self.opts.poll_interval,
            "secrets": len(self.secrets),
            "summary": {"nodes": len(views),
                        "cpu_time": round(sum(v["cpu_time"] or 0 for v in views), 3),
                        "jobs_done": sum(v["jobs_done"] or 0 for v in views)},
            "history": {r.key: [(t, j) for t, j, _, _ in r.history] for r in self.nodes.values()
                        if r.history},
        }

    # ---- what the pages may do ---------------------------------------------------------

    def _routes(self) -> None:
        w = self.web
        w.get("/api/config", self._config)
        w.get("/api/state", self._get_state)
        w.get("/api/node", self._node)
        w.get("/events", self._events)
        w.post("/api/poll", self._poll)
        w.post("/api/add_node", self._add_node)
        w.post("/api/set_secret", self._set_secret)
        w.post("/api/service_time", self._service_time)
        w.post("/api/set_cpus", self._set_cpus)
        w.post("/api/serve", self._serve)

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response({"app": "dispyadmin", "poll_interval": self.opts.poll_interval})

    async def _get_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        return await self.web.hub.stream(request, [("tick", self.state())])

    async def _node(self, request: web.Request) -> web.Response:
        rec = self.nodes.get(request.query.get("node", ""))
        if rec is None:
            return web.json_response({"error": "unknown node"}, status=404)
        return web.json_response({"node": rec.view(), "history": list(rec.history)})

    async def _poll(self, body: dict) -> dict:
        if body.get("interval") not in (None, ""):
            interval = float(body["interval"])
            if not 1 <= interval <= 86400:
                raise ValueError("poll interval must be between 1 and 86400 seconds")
            self.opts.poll_interval = interval
        else:
            await self.poll()  # "Now"
        self._wake.set()
        self._changed.set()
        return {"poll_interval": self.opts.poll_interval}

    async def _add_node(self, body: dict) -> dict:
        host = str(body.get("host") or "").strip()
        if not host:
            raise ValueError("give the node's host name or IP address")
        port = int(body.get("port") or self.opts.node_port)
        try:
            ip = await netif.resolve_async(host)
        except OSError as exc:
            raise ValueError(f"cannot resolve {host}: {exc}") from None
        self.scan((ip, port))
        return {"text": f"asked {ip}:{port} to announce itself"}

    async def _set_secret(self, body: dict) -> dict:
        secret = body.get("secret")
        if not isinstance(secret, str) or not secret:
            raise ValueError("give an admin secret")
        if secret not in self.secrets:
            self.secrets.append(secret)
        unmatched = [r for r in self.nodes.values() if r.secret is None]
        results = await asyncio.gather(*(self._pair(r, [secret]) for r in unmatched))
        matched = [r.key for r, ok in zip(unmatched, results, strict=True) if ok]
        self._changed.set()
        return {"matched": matched,
                "text": f"secret matches {len(matched)} more node(s)"}

    def _selected(self, body: dict) -> list[NodeRecord]:
        keys = body.get("nodes")
        if not isinstance(keys, list) or not keys:
            raise ValueError("select nodes first")
        recs = []
        for key in keys:
            rec = self.nodes.get(str(key))
            if rec is None:
                raise ValueError(f"unknown node {key!r}")
            recs.append(rec)
        return recs

    async def _each(self, recs: list[NodeRecord], op: Any) -> dict:
        async def one(rec: NodeRecord) -> str:
            if rec.link is None:
                return "no matching admin secret"
            try:
                await op(rec.link)
            except AdminError as exc:
                return str(exc)
            await self._poll_one(rec)
            return "ok"

        results = await asyncio.gather(*(one(r) for r in recs))
        out = dict(zip((r.key for r in recs), results, strict=True))
        bad = {k: v for k, v in out.items() if v != "ok"}
        if bad and len(bad) == len(out):
            raise ValueError("; ".join(f"{k}: {v}" for k, v in bad.items()))
        return {"results": out,
                "text": ", ".join(f"{k}: {v}" for k, v in out.items())}

    async def _service_time(self, body: dict) -> dict:
        control = body.get("control")
        when = str(body.get("time") or "").strip()
        if control not in ("start", "stop", "end"):
            raise ValueError("control must be start, stop or end")
        return await self._each(self._selected(body),
                                lambda link: link.set_service_time(control, when))

    async def _set_cpus(self, body: dict) -> dict:
        cpus: Any = body.get("cpus")
        if cpus != "all":
            try:
                cpus = int(cpus)
            except (TypeError, ValueError):
                raise ValueError(f"CPUs must be a number or all, not {cpus!r}") from None
        return await self._each(self._selected(body), lambda link: link.set_cpus(cpus))

    async def _serve(self, body: dict) -> dict:
        clients: Any = body.get("clients")
        try:
            clients = int(clients)
        except (TypeError, ValueError):
            raise ValueError(f"clients must be a number, not {clients!r}") from None
        if clients < -1:
            raise ValueError("clients must be -1 (forever), 0 or more")
        return await self._each(self._selected(body), lambda link: link.set_serve(clients))

    # ---- stdin commands ------------------------------------------------------------------

    def add_secret(self, secret: str) -> None:
        if secret and secret not in self.secrets:
            self.secrets.append(secret)
        for rec in list(self.nodes.values()):
            if rec.secret is None:
                self._spawn(self._pair(rec, [secret]))
