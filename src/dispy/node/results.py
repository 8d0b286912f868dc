"""Results a node could not deliver, kept on disk so they survive a node restart.

A result stays in memory until its client acknowledges it; one that is not
acknowledged soon (client gone, link cut, node stopping) is written here (SQLite, WAL)
and removed once acknowledged, so ``recover_jobs`` can still fetch it after the node
restarts. ``--clean`` deletes the file. The daemon stores the opaque buffers as they
came from the job; it never unpickles them.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from collections.abc import Iterable

from .. import fsafe

_LEN = struct.Struct("!Q")


def _pack(bufs: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(b)) + bytes(b) for b in bufs)


def _unpack(blob: bytes) -> list[bytes]:
    bufs, pos = [], 0
    while pos < len(blob):
        (n,) = _LEN.unpack_from(blob, pos)
        pos += _LEN.size
        bufs.append(blob[pos:pos + n])
        pos += n
    return bufs


class ResultStore:
    def __init__(self, path: str) -> None:
        # 0600, no symlink: results are the clients' data (SQLite gives -wal and -shm
        # the database's mode)
        fsafe.private_file(path)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS results (uid TEXT, client_id TEXT,"
                        " client_name TEXT, header TEXT, bufs BLOB,"
                        " PRIMARY KEY (client_id, uid))")

    def save(self, items: Iterable[tuple[str, str, dict, list[bytes]]]) -> None:
        """Keep (client_id, client_name, header, bufs) results until dropped."""
        rows = [(h["uid"], cid, name, json.dumps(h), _pack(bufs)) for cid, name, h, bufs in items]
        if rows:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                                    rows)

    def drop(self, client_id: str, uids: Iterable[str]) -> None:
        rows = [(client_id, uid) for uid in uids]
        if rows:
            with self.db:
                self.db.executemany("DELETE FROM results WHERE client_id = ? AND uid = ?", rows)

    def load(self) -> dict[str, tuple[str, list[tuple[dict, list[bytes]]]]]:
        """Everything kept: client id -> (client name, [(header, bufs)])."""
        out: dict[str, tuple[str, list]] = {}
        for _uid, cid, name, header, blob in self.db.execute("SELECT * FROM results"):
            out.setdefault(cid, (name, []))[1].append((json.loads(header), _unpack(blob)))
        return out

    def close(self) -> None:
        self.db.close()
