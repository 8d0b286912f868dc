"""Keep freed memory for the next big buffer, and give it back once the burst is over.

glibc serves each allocation of 128 KB or more (8 MB frame buffers, say) with a fresh
``mmap`` and unmaps it when freed, so every big argument or result that passes through
a process makes the kernel zero its pages again: profiles of 8 MB payloads showed a
third of the node daemon's and the client's time in page faults. ``keep_freed`` makes
such buffers come from the heap and stay there once freed; ``note_big`` (called for each
big buffer moved) returns the retained memory to the system a few seconds after the
last one, so an idle process is as small as without it. Elsewhere than glibc: no-ops.

Used by our own processes' event loops (node daemon, scheduler, the client's engine
thread); job processes, which run user code, keep the allocator's defaults.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import time
from typing import Any

#: mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Buffers up to this size come from the heap (glibc caps the threshold at 32 MB).
MMAP_THRESHOLD = 32 << 20
#: Freed memory kept for reuse while buffers move; trimmed after a quiet spell.
TRIM_THRESHOLD = 256 << 20
#: Seconds without a big buffer after which retained memory is returned.
QUIET = 2.0

_libc: Any = None
_state = {"active": False, "last": 0.0, "due": 0.0}


def _load_libc() -> Any:
    """The C library: this process's own symbols first (dlopen of nothing, instant);
    ``find_library`` runs ldconfig or a compiler, milliseconds at every program start."""
    try:
        libc = ctypes.CDLL(None)
        if hasattr(libc, "mallopt"):
            return libc
    except OSError:
        pass
    return ctypes.CDLL(ctypes.util.find_library("c"))


def keep_freed() -> bool:
    """Make big buffers reuse freed heap memory in this process; True if done. Off with
    ``DISPY_KEEP_FREED_MEMORY=0`` in the environment."""
    global _libc
    if _state["active"] or os.environ.get("DISPY_KEEP_FREED_MEMORY", "1") == "0":
        return bool(_state["active"])
    try:
        libc = _load_libc()
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
              and hasattr(libc, "malloc_trim"))
    except (OSError, AttributeError, TypeError):
        return False
    if ok:
        _libc = libc
        _state["active"] = True
    return ok


def note_big() -> None:
    """A big buffer was moved: trim retained memory once none has moved for ``QUIET``
    seconds. Call on an event loop thread."""
    if not _state["active"]:
        return
    now = _state["last"] = time.monotonic()
    # not armed, or armed on a loop that has stopped since (its call never came)
    if now > _state["due"] + QUIET:
        _state["due"] = now + QUIET
        asyncio.get_running_loop().call_later(QUIET, _maybe_trim)


def _maybe_trim() -> None:
    wait = _state["last"] + QUIET - time.monotonic()
    if wait > 0:
        _state["due"] = time.monotonic() + wait
        asyncio.get_running_loop().call_later(wait, _maybe_trim)
        return
    _state["due"] = 0.0
    _libc.malloc_trim(0)
