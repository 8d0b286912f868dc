"""Mutual HMAC-SHA256 challenge-response over fresh nonces.

Each side proves it knows the shared secret by MACing both nonces with a role
label; the secret never crosses the wire, and because each side picks a fresh nonce a
recorded handshake cannot be replayed. The role label stops a proof from one
direction being reflected back in the other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CLIENT_ROLE = "client"
SERVER_ROLE = "server"


def derive_key(secret: str) -> bytes:
    """Key used for the MACs (the raw secret is never used or sent directly)."""
    return hashlib.sha256(b"dispy-auth-v1:" + (secret or "").encode()).digest()


def key_of(secret: str | bytes) -> bytes:
    """A secret, or a key already derived from one (as a recover file keeps it)."""
    return secret if isinstance(secret, bytes) else derive_key(secret)


def new_nonce() -> str:
    """A fresh random challenge, hex encoded."""
    return secrets.token_hex(32)


def proof(key: bytes, role: str, own_nonce: str, peer_nonce: str) -> str:
    """MAC that the side with ``role`` sends: binds its role and both nonces."""
    msg = f"{role}|{peer_nonce}|{own_nonce}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def check(key: bytes, role: str, sender_nonce: str, receiver_nonce: str, mac: object) -> bool:
    """True when ``mac`` is the proof the sender in ``role`` had to send to us."""
    if not isinstance(mac, str):
        return False
    expected = proof(key, role, sender_nonce, receiver_nonce)
    return hmac.compare_digest(expected, mac)
