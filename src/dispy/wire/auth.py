"""Keys and proofs of the handshake, bound to its whole transcript.

Both sides MAC the transcript (hello and challenge: both nonces, roles, protocol
versions and both sides' claimed identities) with a key derived from the shared
secret. The proof of each side carries its role, so a proof cannot be reflected; the
transcript carries both fresh nonces, so a recorded handshake cannot be replayed. From
the same transcript each side derives one key per direction; every record after the
handshake is tagged with them (``codec.Sealer``), so a relay that forwarded the
handshake can neither inject, alter, reorder nor replay anything afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

CLIENT_ROLE = "client"
SERVER_ROLE = "server"
#: roles a connecting peer may take; each has its own secret on the daemon
ROLES = ("client", "admin")


def derive_key(secret: str) -> bytes:
    """Key used for the MACs (the raw secret is never used or sent directly)."""
    return hashlib.sha256(b"dispy-auth-v1:" + (secret or "").encode()).digest()


def key_of(secret: str | bytes) -> bytes:
    """A secret, or a key already derived from one (as a recover file keeps it)."""
    return secret if isinstance(secret, bytes) else derive_key(secret)


def new_nonce() -> str:
    """A fresh random challenge, hex encoded."""
    return secrets.token_hex(32)


def transcript(hello: dict[str, Any], challenge: dict[str, Any]) -> bytes:
    """Digest of what both sides said before proving (``mac`` fields left out)."""
    def canon(d: dict[str, Any]) -> bytes:
        return json.dumps({k: v for k, v in d.items() if k != "mac"}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(canon(hello) + b"\x00" + canon(challenge)).digest()


def _mac(key: bytes, label: str, digest: bytes) -> bytes:
    return hmac.new(key, label.encode() + b"|" + digest, hashlib.sha256).digest()


def proof(key: bytes, role: str, digest: bytes) -> str:
    """MAC that the side with ``role`` sends over the transcript ``digest``."""
    return _mac(key, "proof-" + role, digest).hex()


def check(key: bytes, role: str, digest: bytes, mac: object) -> bool:
    """True when ``mac`` is the proof the sender in ``role`` had to send."""
    return isinstance(mac, str) and mac.isascii() and \
        hmac.compare_digest(proof(key, role, digest), mac)


def session_keys(key: bytes, digest: bytes) -> tuple[bytes, bytes]:
    """(client-to-server, server-to-client) keys of the records after the handshake."""
    return _mac(key, "keys-c2s", digest), _mac(key, "keys-s2c", digest)
