"""dispy.httpd: "Monitor and Manage Cluster" pages for the clusters of one program.

Everything comes from the clusters' public API: ``status()`` (nodes and their
counters), ``node_jobs``, ``set_node_cpus``, ``allocate_node`` ... and the
``cluster_status`` events, which the server sees first and passes on to the program's
own callback. The server runs aiohttp on a thread and loop of its own; calls into a
cluster (which wait for the client's engine) run in worker threads so a busy engine
never stalls the pages.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any

from aiohttp import web

from .. import config
from ..client.job import FINAL, STATUS_NAMES, DispyJob, job_arguments, job_key
from ..client.nodes import DispyNode, NodeAllocate
from ..eventloop import within
from .server import WebServer

log = logging.getLogger("dispy.web")

PAGES = {"": "monitor.html", "monitor": "monitor.html", "node": "node.html",
         "manage": "manage.html"}
#: Seconds between samples of the clusters (charts get one point per sample).
SAMPLE_SEC = 1.0
#: Samples kept for the charts (10 minutes at one a second).
HISTORY = 600
ARGS_TEXT_MAX = 200


def node_key(node: DispyNode) -> str:
    return f"{node.ip_addr}:{node.port}"


def _avail(node: DispyNode) -> dict | None:
    info = node.avail_info
    if info is None:
        return None
    return {"cpu": info.cpu, "memory": info.memory, "disk": info.disk, "swap": info.swap}


def _allocate(cluster: Any, host: str, port: int, cpus: int) -> int:
    """(a thread) ``allocate_node`` of a host name or address the pages were given."""
    return int(cluster.allocate_node(NodeAllocate(host, port, cpus)))


class _Watched:
    """One cluster under watch: counters from its events, its nodes from status()."""

    def __init__(self, cluster: Any, name: str, show_args: bool) -> None:
        self.cluster = cluster
        self.name = name
        self.show_args = show_args
        self.lock = threading.Lock()
        self.counts = {"finished": 0, "cancelled": 0, "failed": 0}
        self.done_total = 0
        #: job key -> the job as submitted (its arguments, for the node page)
        self.submitted: dict[str, DispyJob] = {}
        self.nodes: dict[str, DispyNode] = {}
        self.pending = 0
        self.deallocated: set[str] = set()
        self.previous: Any = None

    def on_event(self, status: int, node: Any, job: Any) -> None:
        """(callback thread) Count what happened; the program's callback runs next."""
        if job is None:
            return
        with self.lock:
            if status == DispyJob.Created and self.show_args:
                self.submitted[job_key(job)] = job
            elif status in FINAL:
                self.submitted.pop(job_key(job), None)
                self.done_total += 1
                what = {DispyJob.Finished: "finished",
                        DispyJob.Cancelled: "cancelled"}.get(status, "failed")
                self.counts[what] += 1

    def args_text(self, job: DispyJob) -> str:
        with self.lock:
            snap = self.submitted.get(job_key(job))
        found = job_arguments(snap) if snap is not None else job_arguments(job)
        if found is None:
            return "?"
        args, kwargs = found
        parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
        text = ", ".join(parts)
        return text if len(text) <= ARGS_TEXT_MAX else text[:ARGS_TEXT_MAX - 3] + "..."


def _short(value: Any) -> str:
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= ARGS_TEXT_MAX else text[:ARGS_TEXT_MAX - 3] + "..."


class DispyHTTPServer:
    """Web pages showing (and managing) ``cluster`` and any added with ``add_cluster``.

    Bound to localhost when ``host`` is '' (the original bound every interface); bound
    elsewhere, it asks for the login token it prints at start. ``poll_sec`` is the
    longest the pages go without an update (they get one at once when something
    changes). ``DocumentRoot`` replaces the package's folder of pages (plain file names
    only). ``port=0`` picks a free port (see ``.port`` / ``.url``).
    """

    def __init__(self, cluster: Any, host: str = "", port: int = config.HTTPServerPort,
                 poll_sec: float = 10, DocumentRoot: str | None = None,  # noqa: N803
                 keyfile: str | None = None, certfile: str | None = None,
                 show_job_args: bool = True) -> None:
        self.poll_sec = _check_poll(poll_sec)
        self.show_job_args = bool(show_job_args)
        self._watched: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._rate: deque = deque(maxlen=HISTORY)
        self._node_hist: dict[str, deque] = {}
        self._known: dict[str, DispyNode] = {}
        self._state: dict = {}
        self._last_total = 0
        self._last_time = 0.0
        self._changed: asyncio.Event | None = None
        self._closed = False
        self.web = WebServer("dispy.httpd", host, port, PAGES, keyfile, certfile,
                             DocumentRoot)
        self._routes()
        if cluster is not None:
            self.add_cluster(cluster)
        self.web.start_thread(self._begin)
        self.web.announce()

    # ---- public API (as in dispy 4.15) --------------------------------------------------

    @property
    def port(self) -> int:
        return self.web.port

    @property
    def url(self) -> str:
        return self.web.login_url()

    @property
    def token(self) -> str | None:
        return self.web.token

    def add_cluster(self, cluster: Any) -> None:
        """Show ``cluster`` too (its events pass through the server first)."""
        name = getattr(cluster, "name", "cluster")
        with self._lock:
            if any(w.cluster is cluster for w in self._watched.values()):
                return
            unique, n = name, 2
            while unique in self._watched:
                unique, n = f"{name} ({n})", n + 1
            watched = _Watched(cluster, unique, self.show_job_args)

            def chained(status: int, node: Any, job: Any) -> None:
                watched.on_event(status, node, job)
                self._poke()
                if watched.previous is not None:
                    watched.previous(status, node, job)

            watched.previous = cluster._chain_status(chained)
            self._watched[unique] = watched
        self._poke()

    def del_cluster(self, cluster: Any) -> None:
        """Stop showing ``cluster``; its own ``cluster_status`` gets the events again."""
        with self._lock:
            for name, w in list(self._watched.items()):
                if w.cluster is cluster:
                    cluster._chain_status(w.previous)
                    del self._watched[name]
        self._poke()

    def shutdown(self, wait: bool = True) -> None:
        """Stop the server. With ``wait`` the pages first get the final state (the
        original slept ``poll_sec`` for their next poll; updates are pushed here)."""
        if self._closed:
            return
        self._closed = True
        loop = self.web.loop
        if wait and loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._final_update(), loop).result(15)
            except Exception as exc:
                log.debug("dispy.httpd: final update failed: %s", exc)
        for w in list(self._watched.values()):
            self.del_cluster(w.cluster)
        self.web.stop_thread()

    def cluster_status(self, status: int, node: Any, job: Any) -> None:
        """4.15 name: the events the server sees (for every watched cluster)."""
        for w in list(self._watched.values()):
            w.on_event(status, node, job)
        self._poke()

    # ---- sampling ----------------------------------------------------------------------

    def _poke(self) -> None:
        loop, changed = self.web.loop, self._changed
        if loop is not None and changed is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:
                pass

    async def _begin(self) -> None:
        self._changed = asyncio.Event()
        await self._sample()
        asyncio.get_running_loop().create_task(self._sampler())

    async def _sampler(self) -> None:
        """Sample every SAMPLE_SEC (sooner after an event, at most 4 times a second); push
        to the pages when something changed, or every poll_sec anyway."""
        assert self._changed is not None
        last_push = time.monotonic()
        last_sample = time.monotonic()
        pending_points: list = []
        while True:
            try:
                await within(self._changed.wait(), SAMPLE_SEC)
                await asyncio.sleep(0.25)
            except asyncio.TimeoutError:
                pass
            self._changed.clear()
            before = self._state
            now = time.monotonic()
            if now - last_sample >= SAMPLE_SEC * 0.9:
                last_sample = now
                pending_points.append(await self._sample())
            else:
                await self._sample(record=False)
            if (_comparable(before) != _comparable(self._state)
                    or now - last_push >= self.poll_sec):
                last_push = now
                self.web.hub.publish("tick", {"state": self._state, "points": pending_points})
                pending_points = []

    async def _final_update(self) -> None:
        point = await self._sample()
        self.web.hub.publish("tick", {"state": self._state, "points": [point], "final": True})
        await asyncio.sleep(0.3)

    async def _sample(self, record: bool = True) -> dict:
        """Read every cluster's status (in a worker thread) into the state the pages show;
        with ``record`` also a chart point: jobs finished per second, nodes' CPU/memory."""
        loop = asyncio.get_running_loop()
        clusters = []
        nodes: dict[str, dict] = {}
        total_done = 0
        for w in list(self._watched.values()):
            try:
                st = await loop.run_in_executor(None, w.cluster.status)
            except Exception as exc:  # a cluster torn down under us
                log.debug("dispy.httpd: status of %r failed: %s", w.name, exc)
                continue
            running = 0
            cpu_time = 0.0
            current = {node_key(n): n for n in st.nodes}
            w.nodes.update(current)
            for key, n in w.nodes.items():
                self._known[key] = n
                entry = nodes.setdefault(key, _node_entry(n))
                entry["clusters"].append(w.name)
                if key not in current:
                    entry["state"] = "closed"
                elif key in w.deallocated:
                    entry["state"] = "deallocated"
                running += n.busy if key in current else 0
                cpu_time += n.cpu_time
            # a view of dispyscheduler's counts its own (nodes' counts are node-wide)
            running = getattr(w.cluster, "jobs_running", running)
            with w.lock:
                counts = dict(w.counts)
                total_done += w.done_total
            clusters.append({
                "name": w.name, "submitted": w.cluster.jobs_submitted,
                "pending": st.jobs_pending, "running": running, **counts,
                "cpu_time": round(cpu_time, 3), "start_time": w.cluster.start_time,
                "nodes": len(current),
                "cpus": sum(n.cpus for n in current.values()),
            })
        now = time.time()
        self._state = {"time": now, "clusters": clusters,
                       "nodes": sorted(nodes.values(), key=lambda e: e["key"]),
                       "poll_sec": self.poll_sec}
        if not record:
            return {}
        elapsed = now - self._last_time if self._last_time else SAMPLE_SEC
        rate = round(max(0, total_done - self._last_total) / max(elapsed, 0.1), 2)
        self._last_total, self._last_time = total_done, now
        point: dict[str, Any] = {"t": now, "rate": rate, "nodes": {}}
        self._rate.append((now, rate))
        for key, entry in nodes.items():
            avail = entry["avail"]
            if avail is None or entry["state"] == "closed":
                continue
            sample = (now, round(100.0 - avail["cpu"], 1), avail["memory"])
            self._node_hist.setdefault(key, deque(maxlen=HISTORY)).append(sample)
            point["nodes"][key] = sample[1:]
        return point

    def _history(self) -> dict:
        return {"rate": list(self._rate),
                "nodes": {k: list(v) for k, v in self._node_hist.items()}}

    # ---- pages and requests -------------------------------------------------------------

    def _routes(self) -> None:
        web_ = self.web
        web_.get("/api/config", self._config)
        web_.get("/api/state", self._get_state)
        web_.get("/api/node", self._node_info)
        web_.get("/events", self._events)
        web_.post("/api/cancel_jobs", self._cancel_jobs)
        web_.post("/api/set_cpus", self._set_cpus)
        web_.post("/api/add_node", self._add_node)
        web_.post("/api/node_action", self._node_action)
        web_.post("/api/settings", self._settings)

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response({"app": "httpd", "show_job_args": self.show_job_args,
                                  "poll_sec": self.poll_sec,
                                  "clusters": list(self._watched)})

    async def _get_state(self, request: web.Request) -> web.Response:
        return web.json_response({"state": self._state, "history": self._history()})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        return await self.web.hub.stream(
            request, [("init", {"state": self._state, "history": self._history()})])

    def _clusters_for(self, name: Any) -> list[_Watched]:
        if name in (None, "", "*"):
            return list(self._watched.values())
        w = self._watched.get(str(name))
        if w is None:
            raise ValueError(f"no cluster named {name!r}")
        return [w]

    def _node(self, key: Any) -> DispyNode:
        node = self._known.get(str(key))
        if node is None:
            raise ValueError(f"unknown node {key!r}")
        return node

    async def _node_info(self, request: web.Request) -> web.Response:
        key = request.query.get("node", "")
        node = self._known.get(key)
        if node is None:
            return web.json_response({"error": f"unknown node {key!r}"}, status=404)
        loop = asyncio.get_running_loop()
        jobs = []
        for w in list(self._watched.values()):
            if key not in w.nodes:
                continue
            found = await loop.run_in_executor(None, w.cluster.node_jobs, node)
            if not isinstance(found, list):
                continue
            for job in found:
                jobs.append({
                    "key": f"{id(job):x}", "id": _short(job.id), "cluster": w.name,
                    "status": STATUS_NAMES.get(job.status, str(job.status)),
                    "start_time": job.start_time,
                    "args": (await loop.run_in_executor(None, w.args_text, job)
                             if self.show_job_args else None),
                })
        entry = next((e for e in self._state.get("nodes", ()) if e["key"] == key),
                     _node_entry(node))
        return web.json_response({"node": entry, "jobs": jobs,
                                  "history": list(self._node_hist.get(key, ()))})

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _cancel_jobs(self, body: dict) -> dict:
        node = self._node(body.get("node"))
        wanted = {str(k) for k in body.get("jobs") or ()}
        if not wanted:
            raise ValueError("no jobs selected")
        cancelled = 0
        for w in list(self._watched.values()):
            jobs = await self._in_thread(w.cluster.node_jobs, node)
            for job in jobs if isinstance(jobs, list) else ():
                if f"{id(job):x}" in wanted and await self._in_thread(w.cluster.cancel,
                                                                       job) == 0:
                    cancelled += 1
        self._poke()
        return {"cancelled": cancelled}

    async def _set_cpus(self, body: dict) -> dict:
        node = self._node(body.get("node"))
        cpus = _int(body.get("cpus"), "cpus")
        results = {}
        for w in self._clusters_for(body.get("cluster")):
            if node_key(node) in w.nodes:
                results[w.name] = await self._in_thread(w.cluster.set_node_cpus, node, cpus)
        if not results:
            raise ValueError(f"node {node_key(node)} is not used by that cluster")
        self._poke()
        return {"cpus": results}

    async def _add_node(self, body: dict) -> dict:
        host = str(body.get("host") or "").strip()
        if not host:
            raise ValueError("give the node's host name or IP address")
        port = _int(body.get("port") or config.NodePort, "port")
        cpus = _int(body.get("cpus") or 0, "cpus")
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not a port number")
        results = {}
        for w in self._clusters_for(body.get("cluster")):
            # NodeAllocate resolves a host name: in the thread too, not on the pages' loop
            results[w.name] = await self._in_thread(_allocate, w.cluster, host, port, cpus)
        self._poke()
        return {"allocate_node": results}

    async def _node_action(self, body: dict) -> dict:
        action = body.get("action")
        if action not in ("allocate", "deallocate", "close"):
            raise ValueError("action must be allocate, deallocate or close")
        keys = body.get("nodes") or []
        if not isinstance(keys, list) or not keys:
            raise ValueError("no nodes selected")
        results: dict[str, dict] = {}
        for key in keys:
            node = self._node(key)
            for w in self._clusters_for(body.get("cluster")):
                if key not in w.nodes:
                    continue
                fn = getattr(w.cluster, f"{action}_node")
                code = await self._in_thread(fn, node)
                if code == 0:
                    if action == "deallocate":
                        w.deallocated.add(key)
                    else:
                        w.deallocated.discard(key)
                results.setdefault(key, {})[w.name] = code
        self._poke()
        return {"results": results}

    async def _settings(self, body: dict) -> dict:
        if "poll_sec" in body:
            self.poll_sec = _check_poll(body["poll_sec"])
        self._poke()
        return {"poll_sec": self.poll_sec}


def _node_entry(n: DispyNode) -> dict:
    return {"key": node_key(n), "ip_addr": n.ip_addr, "port": n.port, "name": n.name,
            "cpus": n.cpus, "busy": n.busy, "jobs_done": n.jobs_done,
            "cpu_time": round(n.cpu_time, 3), "tx": n.tx, "rx": n.rx,
            "update_time": n.update_time, "avail": _avail(n), "clusters": [],
            "state": "ready"}


def _comparable(state: dict) -> Any:
    return {k: v for k, v in state.items() if k != "time"}


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, not {value!r}") from None


def _check_poll(value: Any) -> float:
    try:
        sec = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"poll_sec must be a number of seconds, not {value!r}") from None
    if not 1 <= sec <= 3600:
        raise ValueError("poll_sec must be between 1 and 3600 seconds")
    return sec
