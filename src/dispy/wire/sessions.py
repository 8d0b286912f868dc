"""Session keys: what binds a program's reconnections to its session on a daemon.

A program makes a random session key and presents it, after authenticating, on every
connection to a daemon; the daemon files the session under a digest of it. The
client id a program claims (it travels in discovery broadcasts) names it in logs and
pages and never decides whose jobs, results or computations a connection reaches.
The digest has a fixed alphabet and length, so it is also safe as a directory name.
"""

from __future__ import annotations

import hashlib
import secrets


def new_session_key() -> str:
    return secrets.token_hex(32)


def session_id(key: object) -> str:
    """Digest of a presented session key; a fresh, unguessable one when none was."""
    if not isinstance(key, str) or not 16 <= len(key) <= 128:
        key = new_session_key()
    return hashlib.sha256(b"dispy-session-v1:" + key.encode()).hexdigest()[:32]
