"""Files sent to a node: safe paths under the computation's directory, sizes checked."""

from __future__ import annotations

import os
import re

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


def safe_join(root: str, relpath: str) -> str:
    """``root/relpath``, refusing absolute paths and anything that climbs out of root."""
    if not isinstance(relpath, str) or not relpath or "\x00" in relpath:
        raise ValueError("invalid file name")
    norm = os.path.normpath(relpath.replace("\\", "/"))
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../"):
        raise ValueError(f"file path {relpath!r} is outside the computation's directory")
    return os.path.join(root, norm)


def too_big(size: int, limit: int) -> str | None:
    """Reason to refuse a file of ``size`` bytes, or None when it fits."""
    if limit and size > limit:
        return f"file of {size} bytes is over the node's max_file_size of {limit} bytes"
    return None
