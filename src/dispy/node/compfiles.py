"""A computation's files on the node: its directory, files stored chunk by chunk.

Every path comes from a peer, so each is checked before use: ids of a fixed alphabet,
names joined beneath the computation's directory (never above it, never through a
symlink), sizes within ``--max_file_size``. Files a job process sends back go the
other way (jobs.py); files are removed with their computation (computation.py).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from typing import Any

from .. import fsafe
from ..wire import messages
from .disk import why
from .session import Session

log = logging.getLogger("dispy.node")


def computation_dir(root: str, session: Session, cid: str, dest: Any) -> str:
    """The computation's directory (made here): ``clients/<session id>/<cid>``, or with
    a ``dest_path`` ``dest/<client address>/<dest_path>``, which outlives the program
    (as the original's, by the client's address): a later run of it with the same
    ``dest_path`` finds the files it kept (``cleanup=False``). Ids are checked and paths
    joined beneath the tree, so that no peer names a path outside it."""
    fsafe.check_id(session.sid, "session id")
    fsafe.check_id(cid, "computation id")
    if dest:
        directory = fsafe.safe_join(fsafe.safe_join(root, "dest", host_folder(session.addr)),
                                    dest)
    else:
        directory = fsafe.safe_join(root, "clients", session.sid, cid)
    fsafe.makedirs_beneath(root, directory)
    return directory


def host_folder(addr: str) -> str:
    """A client's address as a folder name (an IPv6 address's ``:`` and ``%`` too)."""
    return re.sub(r"[^0-9A-Za-z.]", "_", addr) or "_"


def store(root: str, max_file_size: int, session: Session, req: messages.File,
          bufs: list[bytes]) -> None:
    """A "file" frame: a chunk of a computation's (or one job's) file."""
    comp = session.computations.get(req.cid)
    reply = req.reply
    if comp is None or comp.failed:
        if reply is not None:
            session.send(messages.Reply(reply=reply, ok=False,
                                        reason="computation is not set up on this node"))
        return
    job_uid = req.job
    try:
        path = fsafe.safe_join(comp.dir, req.path)
        if fsafe.write_chunk(root, path, req, bufs, max_file_size):
            if job_uid is None:
                comp.files.append(path)
            else:
                comp.job_files.setdefault(job_uid, []).append(path)
            if reply is not None:
                session.send(messages.Reply(reply=reply, ok=True))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        if req.path not in comp.refused_files:  # once, not per chunk
            comp.refused_files.add(req.path)
            log.warning("refused file %r from %s: %s", req.path, session.describe(), why(exc))
        if reply is not None:  # cluster.send_file: the client reports it
            session.send(messages.Reply(reply=reply, ok=False, reason=str(exc)))
        elif job_uid is not None:  # the job ends with the reason instead of running
            comp.failed_job_files.setdefault(job_uid, f"file transfer failed: {exc}")
        elif not comp.ready:  # a file of the setup: the computation cannot run
            comp.failed = f"file transfer failed: {exc}"
        # else: a chunk of cluster.send_file before its last, which carries the reply


def check(session: Session, req: messages.FilesCheck) -> None:
    """Answer which of the listed files are missing or differ (shared dest_path)."""
    comp = session.computations.get(req.cid)
    need: list[Any] = []
    for entry in req.files:
        try:
            path = fsafe.safe_join(comp.dir, entry["path"]) if comp else None
            st = os.stat(path, follow_symlinks=False) if path else None
        except (ValueError, KeyError, TypeError, OSError):
            st = None
        if (comp is not None and path is not None and st is not None
                and stat.S_ISREG(st.st_mode) and st.st_size == entry.get("size")
                and st.st_mtime_ns == entry.get("mtime_ns")):
            comp.files.append(path)
        else:
            need.append(entry.get("path"))
    session.send(messages.Reply(reply=req.reply, paths=need))


def remove_client_dir(root: str, session: Session) -> None:
    """The client's own directory, once empty (it keeps files with cleanup=False)."""
    if not session.computations and fsafe.valid_id(session.sid):
        fsafe.remove_beneath(root, os.path.join(root, "clients", session.sid),
                             only_empty=True)
