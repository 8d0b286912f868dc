"""The opening exchange of every TCP connection: versions, then mutual proof of secret.

Only JSON frames of bounded size are read until the peer has proved it knows the
secret, so nothing from an unauthenticated peer is ever unpickled or buffered in bulk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._version import __version__
from ..config import PROTOCOL_VERSION
from . import auth
from .frames import PRE_AUTH_MAX_HEADER, read_frame, write_frame


class HandshakeError(Exception):
    """The peer cannot be used: wrong secret, other protocol version, or a broken hello."""


async def _read_small(reader: asyncio.StreamReader, timeout: float) -> dict[str, Any]:
    header, _ = await asyncio.wait_for(read_frame(reader, PRE_AUTH_MAX_HEADER, 0), timeout)
    return header


def _mismatch(ours: str, theirs: dict) -> str:
    return (
        f"protocol version mismatch: {ours} speaks dispy protocol {PROTOCOL_VERSION} "
        f"(dispy {__version__}), the peer speaks protocol {theirs.get('proto')} "
        f"(dispy {theirs.get('version')})"
    )


async def client_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secret: str | bytes,
    hello: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    """Authenticate to a daemon; returns its welcome (node information).

    ``secret`` may be the derived key itself (bytes), as a recover file keeps it."""
    key = auth.key_of(secret)
    nonce = auth.new_nonce()
    write_frame(
        writer,
        {"op": "hello", "proto": PROTOCOL_VERSION, "version": __version__, "nonce": nonce, **hello},
    )
    challenge = await _read_small(reader, timeout)
    if challenge.get("op") == "error":
        raise HandshakeError(str(challenge.get("reason")))
    if challenge.get("proto") != PROTOCOL_VERSION:
        raise HandshakeError(_mismatch("this client", challenge))
    peer_nonce = challenge.get("nonce")
    if not isinstance(peer_nonce, str) or not auth.check(
        key, auth.SERVER_ROLE, peer_nonce, nonce, challenge.get("mac")
    ):
        reason = "secret mismatch: the peer does not know this cluster's secret"
        write_frame(writer, {"op": "error", "reason": "secret mismatch: the client and this"
                             " node were given different secrets"})
        raise HandshakeError(reason)
    write_frame(writer, {"op": "auth", "mac": auth.proof(key, auth.CLIENT_ROLE, nonce, peer_nonce)})
    welcome = await _read_small(reader, timeout)
    if welcome.get("op") != "welcome":
        raise HandshakeError(str(welcome.get("reason", "handshake refused")))
    return welcome


async def server_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secret: str | Callable[[dict[str, Any]], str | None],
    welcome: Callable[[dict[str, Any]], dict[str, Any]],
    timeout: float,
    name: str = "this node",
) -> dict[str, Any]:
    """Authenticate a connecting client; returns its hello. ``welcome`` builds our answer.

    ``secret`` may pick the secret by the hello (its "role": dispyadmin's "admin" needs
    the node's admin secret); None refuses that role."""
    hello = await _read_small(reader, timeout)
    if hello.get("op") != "hello" or not isinstance(hello.get("nonce"), str):
        raise HandshakeError("first frame is not a hello")
    if callable(secret):
        chosen = secret(hello)
        if chosen is None:
            reason = f"{name} does not accept the role {str(hello.get('role'))[:20]!r}"
            write_frame(writer, {"op": "error", "reason": reason})
            raise HandshakeError(reason)
        secret = chosen
    key = auth.derive_key(secret)
    if hello.get("proto") != PROTOCOL_VERSION:
        reason = _mismatch(name, hello)
        write_frame(writer, {"op": "error", "reason": reason})
        raise HandshakeError(reason)
    nonce = auth.new_nonce()
    write_frame(
        writer,
        {
            "op": "challenge",
            "proto": PROTOCOL_VERSION,
            "version": __version__,
            "nonce": nonce,
            "mac": auth.proof(key, auth.SERVER_ROLE, nonce, hello["nonce"]),
        },
    )
    answer = await _read_small(reader, timeout)
    if answer.get("op") == "error":
        raise HandshakeError(f"client gave up: {str(answer.get('reason'))[:200]!r}")
    if not auth.check(key, auth.CLIENT_ROLE, hello["nonce"], nonce, answer.get("mac")):
        reason = f"secret mismatch: the client does not know the secret of {name}"
        write_frame(writer, {"op": "error", "reason": reason})
        raise HandshakeError(reason)
    write_frame(writer, {"op": "welcome", **welcome(hello)})
    return hello
