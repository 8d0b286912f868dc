"""dispyadmin's connection to one node: the small interface its pages are built on.

It opens a connection, says ``"role": "admin"`` in the handshake, proves the admin
secret, and then asks the node (node/admin.py) for its details or to change its CPUs,
service times or number of clients to serve. Only JSON crosses this link, as the
records of wire/adminmsg.py. The wire handshake is being rewritten; only this module
knows how it is done today.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

from ..log import why
from ..wire import adminmsg, tls
from ..wire.adminmsg import AdminMessageError, AdminReply, AdminRequest, Unlisted
from ..wire.codec import FrameError
from ..wire.connection import Connection, ConnectionClosed
from ..wire.handshake import HandshakeError, client_handshake

ROLE = "admin"
_tokens = itertools.count(1)


class AdminError(Exception):
    """The node could not be reached, refused the secret, or refused the request."""


class AdminLink:
    """Administer the node at ``host``:``port`` with ``secret`` (its --admin_secret)."""

    def __init__(self, host: str, port: int, secret: str, certfile: str | None = None,
                 keyfile: str | None = None, timeout: float = 10.0) -> None:
        self.host = host
        self.port = int(port)
        self.secret = secret
        self.certfile = certfile
        self.keyfile = keyfile
        self.timeout = timeout
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> Connection:
        if self._conn is not None and not self._conn.is_closing():
            return self._conn
        ctx = tls.client_context(self.certfile, self.keyfile)
        try:
            conn = await Connection.open(self.host, self.port, ctx, self.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise AdminError(f"cannot connect to {self.host}:{self.port}:"
                             f" {why(exc, 'timed out')}") from None
        try:
            await client_handshake(conn, self.secret, {"client_name": "dispyadmin"},
                                   self.timeout, role=ROLE)
        except HandshakeError as exc:
            conn.close()
            reason = str(exc)
            if "secret mismatch" in reason:
                reason = (f"admin secret does not match node {self.host}:{self.port}"
                          " (its --admin_secret)")
            raise AdminError(reason) from None
        except (OSError, asyncio.TimeoutError, ConnectionClosed, FrameError) as exc:
            conn.close()
            raise AdminError(f"handshake with {self.host}:{self.port} failed:"
                             f" {why(exc)}") from None
        self._conn = conn
        return conn

    async def ask(self, msg: AdminRequest | Unlisted) -> AdminReply:
        """Send one request and return the node's answer (AdminError if refused)."""
        async with self._lock:
            conn = await self._open()
            conn.send(dataclasses.replace(msg, reply=str(next(_tokens))))
            try:
                header, _ = await conn.recv(self.timeout)
            except (OSError, asyncio.TimeoutError, ConnectionClosed, FrameError) as exc:
                self.close()
                raise AdminError(f"node {self.host}:{self.port} went away:"
                                 f" {why(exc)}") from None
        try:
            answer = adminmsg.parse_reply(header)
        except AdminMessageError as exc:
            raise AdminError(f"node {self.host}:{self.port} answered nonsense: {exc}") from None
        if not answer.ok:
            raise AdminError(answer.error if answer.error is not None else "refused")
        return answer

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send request ``op`` with ``fields``; the answer's fields (AdminError if
        refused). An op the admin role lacks goes out too: the node refuses it."""
        return (await self.ask(adminmsg.request(op, **fields))).fields()

    async def info(self) -> dict[str, Any]:
        """The node's details: CPUs, jobs done, CPU time, availability, service times..."""
        answer = await self.ask(adminmsg.Info())
        if answer.info is None:
            raise AdminError(f"node {self.host}:{self.port} sent no details")
        return answer.info

    async def set_cpus(self, cpus: int | str) -> int:
        """Use ``cpus`` CPUs (negative: all but that many; "all"); returns the number."""
        answer = await self.ask(adminmsg.SetCpus(cpus=cpus))
        if answer.cpus is None:
            raise AdminError(f"node {self.host}:{self.port} did not say its CPUs")
        return answer.cpus

    async def set_service_time(self, control: str, when: str | None) -> dict[str, Any]:
        """Set a service time: ``control`` start/stop/end, ``when`` "HH:MM", "now" or
        None (clear it)."""
        answer = await self.ask(adminmsg.ServiceTime(control=control, time=when or ""))
        return answer.fields()

    async def set_service_times(self, start: str | None = None, stop: str | None = None,
                                end: str | None = None) -> dict[str, Any]:
        """Set several service times (those given) in order start, stop, end."""
        answer: dict[str, Any] = {}
        for control, when in (("start", start), ("stop", stop), ("end", end)):
            if when is not None:
                answer = await self.set_service_time(control, when)
        return answer

    async def set_serve(self, clients: int) -> None:
        """Serve ``clients`` more clients (0: none after the current one, -1: forever)."""
        await self.ask(adminmsg.Serve(clients=int(clients)))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
