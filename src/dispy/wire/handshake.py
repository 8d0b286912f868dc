"""The opening exchange of every TCP connection: versions, then mutual proof of secret.

hello (client: nonce, role, identity) -> challenge (server: nonce, identity, proof) ->
auth (client: proof) -> welcome. Only small JSON frames are read until the peer has
proved it knows the secret, so nothing from an unauthenticated peer is ever unpickled
or buffered in bulk. The proofs and the keys that seal the rest of the connection
come from the transcript, so the session is bound to this very handshake; the welcome
is the first sealed record.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from .._version import __version__
from ..config import PROTOCOL_VERSION
from ..eventloop import within
from . import auth
from .codec import FULL, FrameError, Limits
from .connection import Connection, ConnectionClosed, Traffic


class HandshakeError(Exception):
    """The peer cannot be used: wrong secret, other protocol version, or a broken hello."""


def _mismatch(ours: str, theirs: dict) -> str:
    return (
        f"protocol version mismatch: {ours} speaks dispy protocol {PROTOCOL_VERSION} "
        f"(dispy {__version__}), the peer speaks protocol {theirs.get('proto')!r} "
        f"(dispy {str(theirs.get('version'))[:40]!r})"
    )


async def client_handshake(
    conn: Connection,
    secret: str | bytes,
    hello: dict[str, Any],
    timeout: float,
    limits: Limits = FULL,
    role: str = auth.CLIENT_ROLE,
) -> dict[str, Any]:
    """Authenticate to a daemon and seal the connection; returns its welcome.

    ``secret`` may be the derived key itself (bytes), as a recover file keeps it."""
    key = auth.key_of(secret)
    first = {"op": "hello", "proto": PROTOCOL_VERSION, "version": __version__,
             "nonce": auth.new_nonce(), "role": role, **hello}
    conn.send(first)
    challenge, _ = await conn.recv(timeout)
    if challenge.get("op") == "error":
        raise HandshakeError(str(challenge.get("reason"))[:500])
    if challenge.get("proto") != PROTOCOL_VERSION:
        raise HandshakeError(_mismatch("this client", challenge))
    digest = auth.transcript(first, challenge)
    if not isinstance(challenge.get("nonce"), str) or not auth.check(
            key, auth.SERVER_ROLE, digest, challenge.get("mac")):
        conn.send({"op": "error", "reason": "secret mismatch: the client was given another"
                   " secret than this daemon (dispynode -s, dispyscheduler"
                   " --cluster_secret)"})
        conn.flush()
        raise HandshakeError("secret mismatch: the peer does not know this cluster's secret")
    conn.send({"op": "auth", "mac": auth.proof(key, role, digest)})
    c2s, s2c = auth.session_keys(key, digest)
    conn.seal(c2s, s2c, limits)
    welcome, _ = await conn.recv(timeout)
    if welcome.get("op") != "welcome":
        raise HandshakeError(str(welcome.get("reason", "handshake refused"))[:500])
    return welcome


async def server_handshake(
    conn: Connection,
    keys: Callable[[str], bytes | None],
    welcome: Callable[[dict[str, Any]], dict[str, Any]],
    timeout: float,
    name: str = "this node",
    identity: dict[str, Any] | None = None,
    limits: Limits = FULL,
) -> dict[str, Any]:
    """Authenticate a connecting peer and seal the connection; returns its hello.

    ``keys(role)`` gives the key of that role's secret (None: role not served here);
    ``welcome(hello)`` builds our answer, sent as the first sealed record."""
    hello, _ = await conn.recv(timeout)
    if hello.get("op") != "hello" or not isinstance(hello.get("nonce"), str):
        raise HandshakeError("first frame is not a hello")
    if hello.get("proto") != PROTOCOL_VERSION:
        reason = _mismatch(name, hello)
        conn.send({"op": "error", "reason": reason})
        conn.flush()
        raise HandshakeError(reason)
    role = hello.get("role", auth.CLIENT_ROLE)
    key = keys(role) if isinstance(role, str) else None
    if key is None:
        reason = f"{name} does not serve peers in role {str(role)[:20]!r}"
        conn.send({"op": "error", "reason": reason})
        conn.flush()
        raise HandshakeError(reason)
    challenge = {"op": "challenge", "proto": PROTOCOL_VERSION, "version": __version__,
                 "nonce": auth.new_nonce(), **(identity or {})}
    digest = auth.transcript(hello, challenge)
    conn.send({**challenge, "mac": auth.proof(key, auth.SERVER_ROLE, digest)})
    answer, _ = await conn.recv(timeout)
    if answer.get("op") == "error":
        raise HandshakeError(f"client gave up: {str(answer.get('reason'))[:200]!r}")
    if not auth.check(key, role, digest, answer.get("mac")):
        reason = f"secret mismatch: the client does not know the secret of {name}"
        conn.send({"op": "error", "reason": reason})
        conn.flush()
        raise HandshakeError(reason)
    c2s, s2c = auth.session_keys(key, digest)
    conn.seal(s2c, c2s, limits)
    try:
        body = welcome(hello)
    except HandshakeError as exc:  # refused after all (sealed: the peer reads why)
        conn.send({"op": "error", "reason": str(exc)})
        conn.flush()
        raise
    conn.send({"op": "welcome", **body})
    return hello


async def accept(
    conn: Connection,
    keys: Callable[[str], bytes | None],
    welcome: Callable[[dict[str, Any]], dict[str, Any]],
    timeout: float,
    name: str,
    log: logging.Logger,
    identity: dict[str, Any] | None = None,
    limits: Limits = FULL,
) -> dict[str, Any] | None:
    """A daemon's side of the handshake, with one policy for failures: the hello, or
    None once the failure is logged and the connection closed."""
    peer = conn.peer[0]
    try:
        return await server_handshake(conn, keys, welcome, timeout, name, identity, limits)
    except HandshakeError as exc:
        log.warning("refused connection from %s: %s", peer, exc)
        await conn.close_soon()
    except (asyncio.TimeoutError, ConnectionClosed, FrameError, OSError) as exc:
        # a port probe (connect, close) is routine; a peer that stalls is not
        level = logging.DEBUG if isinstance(exc, ConnectionClosed) else logging.INFO
        log.log(level, "dropped connection from %s during handshake: %s", peer,
                "no hello within --msg_timeout" if isinstance(exc, asyncio.TimeoutError)
                else exc)
        conn.close()
    return None


async def rehearse(timeout: float = 2.0) -> None:
    """A whole handshake and one sealed frame each way between two ends of a socket
    pair in this process, with a throwaway secret: a daemon does this before it serves,
    so that its first client does not wait for the first run of that code (about a
    millisecond on a fresh dispynode). Nothing of it is kept, nor counted as traffic;
    a rehearsal that fails (or takes over ``timeout`` seconds) is logged and forgotten:
    it is only a speed-up."""
    conns: list[Connection] = []
    try:
        await within(_rehearsal(conns), timeout)
    except Exception as exc:  # (OSError, a timeout on a crowded machine, ...)
        logging.getLogger("dispy.wire").debug("handshake rehearsal skipped: %r", exc)
    finally:
        for conn in conns:
            conn.close()
            Traffic.received -= conn.bytes_in
            Traffic.sent -= conn.bytes_out


async def _rehearsal(conns: list[Connection]) -> None:
    ends = socket.socketpair()
    try:
        for end in ends:
            end.setblocking(False)
            conns.append(await Connection.open_unix(end))
    finally:
        for end in ends[len(conns):]:
            end.close()
    key = auth.key_of(auth.new_nonce())
    server = server_handshake(conns[1], lambda role: key, lambda hello: {}, 5.0)
    client = client_handshake(conns[0], key, {}, 5.0)
    await asyncio.gather(server, client)
    conns[0].send({"op": "rehearsal"})
    conns[1].send({"op": "rehearsal"})
    await asyncio.gather(conns[0].recv(5.0), conns[1].recv(5.0))
