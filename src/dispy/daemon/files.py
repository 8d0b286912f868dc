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


def write_chunk(path: str, header: dict, bufs: list[bytes]) -> bool:
    """Write one chunk of a "file" frame at its offset; True when the file is complete
    (then it gets the sender's mode and exact mtime: the file cache compares it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "r+b" if header.get("offset") else "wb") as fh:
        fh.seek(int(header.get("offset", 0)))
        for buf in bufs:
            fh.write(buf)
    if not header.get("final"):
        return False
    os.chmod(path, int(header.get("mode", 0o644)) & 0o7777)
    ns = header.get("mtime_ns")
    if isinstance(ns, int):
        os.utime(path, ns=(ns, ns))
    else:
        os.utime(path, (float(header["mtime"]), float(header["mtime"])))
    return True
