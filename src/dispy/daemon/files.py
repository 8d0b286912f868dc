"""Files sent to a node: sizes with units, and the node's limit on them.

Paths and writes are ``dispy.fsafe``'s (shared with dispyscheduler); re-exported here.
"""

from __future__ import annotations

import re

from ..fsafe import safe_join, write_chunk

__all__ = ["parse_size", "safe_join", "too_big", "write_chunk"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """'10m' -> 10485760; a plain number is bytes; 0 means no limit."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError("size must be >= 0")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number with optional k, m, g or t")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def too_big(size: int, limit: int) -> str | None:
    """Reason to refuse a file of ``size`` bytes, or None when it fits."""
    if limit and size > limit:
        return f"file of {size} bytes is over the node's max_file_size of {limit} bytes"
    return None
