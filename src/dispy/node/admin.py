"""The node's side of dispyadmin: its own role, its own secret, a few operations.

dispyadmin says ``"role": "admin"`` in its hello; the node then authenticates it with
``--admin_secret`` (a node without one refuses the role), and the connection is served
here only: it can read the node's details and set CPUs, service times and the number of
clients to serve, never send code or jobs. A client's secret cannot administer (it is
checked against the client secret only), and the admin secret cannot run code.
Requests and answers are the records of wire/adminmsg.py, which checks each request's
fields before anything here acts on it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from typing import Any

from .._version import __version__
from ..wire import auth, netif
from ..wire.adminmsg import (
    CONTROLS,
    AdminMessageError,
    AdminReply,
    AdminRequest,
    Info,
    NotAdminOperation,
    Serve,
    ServiceTime,
    SetCpus,
    parse_request,
    refusal,
)
from ..wire.codec import FrameError
from ..wire.connection import ConnectionClosed
from ..wire.messages import Cpus
from . import service
from .avail import avail_info
from .service import ServiceWindow, format_hhmm

log = logging.getLogger("dispy.node")

ROLE = "admin"


def key(daemon: Any) -> bytes | None:
    """Key of the admin role: from --admin_secret; None (role refused) without one."""
    secret = daemon.opts.admin_secret
    return auth.derive_key(secret) if secret else None


class AdminState:
    """Service times as dispyadmin set them, also while they do not form a window yet."""

    def __init__(self, window: ServiceWindow | None) -> None:
        self.times: dict[str, int | None] = {
            "start": window.start if window else None,
            "stop": window.stop if window else None,
            "end": window.end if window else None,
        }


def _state(daemon: Any) -> AdminState:
    state = getattr(daemon, "admin_state", None)
    if state is None:
        state = daemon.admin_state = AdminState(daemon.opts.service_window)
    return state


async def serve(daemon: Any, conn: Any, peer: str) -> None:
    """Answer an authenticated dispyadmin's requests until it hangs up."""
    log.info("dispyadmin connected from %s", peer)
    try:
        while True:
            header, _ = await conn.recv()
            conn.send(answer(daemon, header, peer))
    except (ConnectionClosed, ConnectionError, OSError):
        pass
    except FrameError as exc:
        log.warning("dispyadmin at %s: %s", peer, exc)
    finally:
        conn.close()


def answer(daemon: Any, header: dict, peer: str = "") -> AdminReply:
    """The answer to one request frame (``ok`` False with ``error`` when refused)."""
    try:
        request = parse_request(header)
    except NotAdminOperation as exc:
        log.warning("dispyadmin at %s asked for %r: not an admin operation", peer, exc.op)
        return refusal(header, str(exc))
    except AdminMessageError as exc:
        return refusal(header, str(exc))
    try:
        reply = handle(daemon, request, peer)
    except (ValueError, TypeError) as exc:
        reply = AdminReply(ok=False, error=str(exc))
    return dataclasses.replace(reply, reply=request.reply)


def handle(daemon: Any, request: AdminRequest, peer: str = "") -> AdminReply:
    """What one (checked) admin request does."""
    if isinstance(request, Info):
        return AdminReply(ok=True, info=info(daemon, peer))
    if isinstance(request, SetCpus):
        return set_cpus(daemon, request.cpus)
    if isinstance(request, ServiceTime):
        return service_time(daemon, request.control, request.time)
    if isinstance(request, Serve):
        return serve_clients(daemon, request.clients)
    raise TypeError(f"no handler for {request.op!r}")


def info(daemon: Any, peer: str = "") -> dict[str, Any]:
    """Everything dispyadmin shows about this node."""
    opts = daemon.opts
    times = _state(daemon).times
    clients = []
    for session in daemon.sessions.values():
        if session.orphan and not session.computations:
            continue
        clients.append({
            "name": session.name, "addr": session.addr,
            "computations": [{"name": c.name, "running": len(c.running),
                              "jobs_done": c.jobs_done} for c in session.computations.values()],
        })
    remaining = -1 if opts.serve < 0 else max(0, opts.serve - daemon.served)
    ip = netif.address_towards(peer, daemon.ifs) if peer else None
    return {
        "name": daemon.name, "version": __version__, "node_id": daemon.node_id,
        "ip_addr": ip or (daemon.ifs[0].address if daemon.ifs else None),
        "port": opts.node_port, "cpus": daemon.cpus, "usable_cpus": daemon.usable_cpus(),
        "max_cpus": os.cpu_count() or 1, "busy": daemon.jobs.busy,
        "jobs_done": daemon.jobs.jobs_done,
        "cpu_time": round(daemon.jobs.cpu_time, 3), "served": daemon.served, "serve": remaining,
        "owner": daemon.owner.describe() if daemon.owner is not None else None,
        "clients": clients,
        "service": {k: (format_hhmm(v) if v is not None else None) for k, v in times.items()},
        "service_state": daemon.service_state, "service_text": daemon.service_text(),
        "avail_info": avail_info(opts.dest_path_prefix), "platform": platform.platform(),
        "time": time.time(),
    }


def set_cpus(daemon: Any, cpus: int | str) -> AdminReply:
    """``cpus`` > 0 uses that many, < 0 leaves that many unused, "all" uses all (the
    record checked it is one of those)."""
    ncpu = os.cpu_count() or 1
    n = ncpu if cpus == "all" else int(cpus)
    if n > ncpu or ncpu + n < 0:
        raise ValueError(f"the node has {ncpu} CPUs; cannot use {n}")
    daemon.set_cpus(n)
    log.info("dispyadmin set CPUs to %d", daemon.cpus)
    return AdminReply(ok=True, cpus=daemon.cpus)


def service_time(daemon: Any, control: str, when: str | None) -> AdminReply:
    """Set (HH:MM or "now", the node's time) or clear ("") service time ``control``
    (one of ``CONTROLS``, as the record checked).

    The times take effect as a window once it has a start and a stop or end; until
    then they are kept (so they can be set one at a time)."""
    if control not in CONTROLS:  # also when called other than through a record
        raise ValueError(f"control must be one of {', '.join(CONTROLS)}")
    state = _state(daemon)
    times = dict(state.times)
    if when in (None, ""):
        times[control] = None
    elif str(when).lower() == "now":
        times[control] = int(service.seconds_of_day(service.clock())) // 60 * 60
    else:
        times[control] = service.parse_hhmm(str(when), control)
    text = {k: format_hhmm(v) if v is not None else None for k, v in times.items()}
    if times["start"] is not None and (times["stop"] is not None or times["end"] is not None):
        window = ServiceWindow.from_options(text["start"], text["stop"], text["end"])
    elif any(v is not None for v in times.values()):
        window = None  # incomplete: kept, not applied
        state.times = times
        return AdminReply(ok=True, service=text, pending=True,
                          text="kept; a service window needs a start and a stop or end time")
    else:
        window = None
    state.times = times
    daemon.opts.service_window = window
    log.info("dispyadmin set service times: %s",
             window.describe() if window else "always in service")
    if window is None:
        _reopen(daemon)
    else:
        daemon.service_tick()
    return AdminReply(ok=True, service=text, service_state=daemon.service_state)


def _reopen(daemon: Any) -> None:
    """No window any more: the node is in service again at once."""
    if daemon.service_state == service.OPEN:
        return
    daemon.service_state = service.OPEN
    if daemon.owner is not None:
        daemon.owner.send(Cpus(cpus=daemon.usable_cpus()))
    daemon.jobs.start_jobs()
    if daemon.owner is None:
        daemon.announce()


def serve_clients(daemon: Any, clients: int) -> AdminReply:
    """Serve ``clients`` (-1 or more, as the record checked) more clients after the
    current one (0: none, -1: forever); the node quits once it has served them. It
    replaces a Ctrl-C's "quit once this client is done" (the last word counts)."""
    if daemon.quitting:
        daemon.quitting = False
        log.info("dispyadmin: the quit asked with Ctrl-C is replaced by 'serve'")
    if clients < 0:
        daemon.opts.serve = -1
    else:
        daemon.opts.serve = daemon.served + (1 if daemon.owner is not None else 0) + clients
        if daemon.owner is None and daemon.opts.serve <= daemon.served:
            log.info("dispyadmin: no more clients to serve; quitting")
            daemon.request_stop(terminate=False)
    log.info("dispyadmin: serve %s", "forever" if clients < 0 else f"{clients} more client(s)")
    return AdminReply(ok=True, serve=clients)
