"""The local path: a peer on the same host moves its connection to a Unix socket.

On loopback a TCP write runs the whole TCP stack for both ends; a Unix socket write is
a copy and a wake-up (a round trip of small frames: about 85 us against 40 us on a
2-core VM). So a daemon (dispynode, dispyscheduler) also listens on a Unix socket in
Linux's abstract namespace (no file: nothing is left behind when the daemon is killed,
and the namespace is the network namespace's, so only peers that could reach its
loopback can reach it), under a fresh random name (listed in /proc/net/unix for anyone
on the host: nothing rests on its secrecy). The name is offered in the welcome of an
authenticated TCP connection from the same host, and the peer then opens a second
connection there with the same handshake and session, and checks the daemon's id: the
Unix socket is a faster wire, not a way around authentication. Its frames are sealed as
on TCP. A daemon welcomes a connection there only for a session open at that moment,
whose address it keeps; until the peer moves or speaks on TCP it holds the frames it
has for it (``Connection.hold``) and hands them to the connection the peer reads. Where
anything of it fails (another OS, a peer in another network namespace, a crowded
socket), the peer stays on TCP and says so with a frame there.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from ..eventloop import within
from ..log import why
from . import auth
from .codec import FrameError
from .connection import Connection, ConnectionClosed, Handler, serve_peers
from .handshake import HandshakeError
from .messages import Ack

log = logging.getLogger("dispy.wire")

#: the welcome field that offers the local path
FIELD = "local"
#: what an offered name must look like: ours, never a path or another program's socket
_NAME = re.compile(r"dispy-[a-z]{1,12}-[0-9a-f]{32}")
#: the peer address a daemon sees on the local path
PEER = "local"


def listen(role: str) -> tuple[socket.socket, str] | None:
    """A listening socket under a fresh abstract name, and the name; None where the OS
    has no abstract namespace (the TCP connections are used as they are)."""
    name = f"dispy-{role}-{secrets.token_hex(16)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0" + name)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        log.debug("no local path (%s): same-host peers use TCP", exc)
        return None
    return sock, name


async def serve(role: str, handler: Handler, servers: list[asyncio.AbstractServer],
                what: str) -> str | None:
    """A daemon's local path: listen under a fresh name and serve ``handler`` there
    (the server joins ``servers``); the name, or None (another OS)."""
    got = listen(role)
    if got is None:
        return None
    servers.append(await serve_peers(handler, got[0]))
    log.debug("local path for %s on this host: @%s", what, got[1])
    return got[1]


def switch(old: Connection | None, new: Connection, offered: bool, hold_for: float) -> bool:
    """A program's session takes ``new`` as its connection, in place of ``old``: on the
    local path, what ``old`` held goes to ``new`` in order; a TCP connection that was
    offered the local path holds what comes for the program until it moves or speaks
    (``hold_for`` seconds at most). True when the session must send its kept results
    again (nothing carried them over)."""
    resend = True
    if old is not None:
        if is_local(new) and old.held:
            old.hand_over(new)
            resend = False
        old.close()
    if offered:
        new.hold()
        asyncio.get_running_loop().call_later(hold_for, new.release)
    return resend


def same_host(conn: Connection) -> bool:
    """A TCP connection whose two ends are one address: a peer on this host (and in
    this network namespace)."""
    sock = conn.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    return conn.sockname is not None and conn.peer[0] == conn.sockname


def offer(conn: Connection, name: str | None) -> dict[str, str]:
    """The welcome field offering ``name`` to the peer of ``conn``, when it is local."""
    return {FIELD: name} if name is not None and same_host(conn) else {}


def offered(conn: Connection, welcome: dict[str, Any]) -> str | None:
    """The name a daemon's welcome offers, if it is well formed and ``conn`` (ours,
    over TCP) really is to this host; else None."""
    name = welcome.get(FIELD)
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        return None
    return name if same_host(conn) else None


async def connect(name: str) -> Connection:
    """A connection to the daemon's local path (a connect there never blocks: it is
    accepted or refused at once). Raises OSError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.connect("\0" + name)
    except OSError:
        sock.close()
        raise
    _, conn = await asyncio.get_running_loop().create_unix_connection(Connection, sock=sock)
    return conn


def is_local(conn: Connection) -> bool:
    """A connection that came in on the local path (a Unix socket: no peer address)."""
    return conn.peer[0] == PEER


def admission_key(conn: Connection) -> str:
    """Whom a daemon counts a connection against before its handshake: the peer's
    address, or on the local path its user (so one local user cannot crowd out
    another's programs)."""
    return f"{PEER}:uid={conn.peer[1]}" if is_local(conn) else conn.peer[0]


async def take(name: str, handshake: Callable[[Connection], Awaitable[dict[str, Any]]],
               first: dict[str, Any], field: str, timeout: float,
               describe: str) -> tuple[Connection, dict[str, Any]] | None:
    """A program's move to a daemon's local path: connect, ``handshake`` there, and
    check that the daemon that answers is the one of the TCP welcome ``first`` (the
    same non-empty ``field``, its id). The new connection and its welcome, or None
    (logged) to keep the TCP one."""
    try:
        conn = await within(connect(name), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        log.debug("%s: local path not taken: %s", describe, why(exc))
        return None
    try:
        welcome = await handshake(conn)
    except BaseException as exc:
        conn.close()
        if not isinstance(exc, Exception):
            raise  # (cancelled: the program is closing)
        if not isinstance(exc, (HandshakeError, OSError, asyncio.TimeoutError,
                                ConnectionClosed, FrameError)):
            log.warning("%s: local path not taken: %r", describe, exc)
        else:
            log.debug("%s: local path not taken: %s", describe, why(exc))
        return None
    ours = first.get(field)
    if not (isinstance(ours, str) and ours and welcome.get(field) == ours
            and welcome.get("scheduler") == first.get("scheduler")):
        log.warning("%s: local path not taken: another daemon answered there", describe)
        conn.close()
        return None
    return conn, welcome


async def move(conn: Connection, welcome: dict[str, Any],
               handshake: Callable[[Connection], Awaitable[dict[str, Any]]], field: str,
               timeout: float, describe: str) -> tuple[Connection, dict[str, Any]]:
    """A program's side, after its TCP handshake: the connection to use and its welcome,
    on the local path if the daemon offered it and the move worked (``take``), else the
    TCP one, on which it tells the daemon at once that it stays (the daemon holds what
    it has for the program until then)."""
    name = offered(conn, welcome)
    if name is None:
        return conn, welcome
    moved = await take(name, handshake, welcome, field, timeout, describe)
    if moved is None:
        conn.send(Ack())
        return conn, welcome
    conn.close()
    return moved


def carries_on(hello: dict[str, Any], session: Any) -> str:
    """A daemon's check of a connection on its local path, as it welcomes it: the TCP
    address of the program's session it carries on (its folders and logs name that).
    Raises HandshakeError (the connection is refused) when there is none to carry on:
    not a program's role, or no connection of that session open at the moment."""
    if hello.get("role", auth.CLIENT_ROLE) != auth.CLIENT_ROLE or session is None \
            or session.conn is None:
        raise HandshakeError("no client session of it is open over TCP")
    return str(session.addr)
