"""What goes to a node besides jobs: a computation, its files and setup_args.

Shared by the engine's node links and SharedJobCluster's scheduler link (which sends
the same "file" frames to dispyscheduler). A file moves in chunks of
``config.FileChunkSize`` with its exact mtime and mode; with a shared ``dest_path`` the
node is first asked which files it lacks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, Protocol

from .. import config
from ..wire import messages
from .clusterstate import ClusterState

log = logging.getLogger("dispy")


class Peer(Protocol):
    """A connection to a daemon as the uploads use it (client/links.py NodeLink)."""

    conn: Any

    def send(self, header: dict | messages.Record, bufs: Any = ...) -> Any: ...

    def describe(self) -> str: ...


async def set_up(link: Peer, cs: ClusterState, files: list, setup_args: bytes,
                 timeout: float) -> None:
    """The computation, then its files, then setup_args: the node runs setup last."""
    log.debug("node %s: setting up %r (%d file(s))", link.describe(), cs.name, len(files))
    link.send(messages.Compute(cid=cs.cid, name=cs.name, dest_path=cs.dest_path,
                               cleanup=cs.cleanup is not False,
                               pulse_interval=cs.pulse_interval,
                               kind="program" if cs.package.program else "function"),
              [cs.package.bundle])
    if cs.dest_path and files:
        files = await files_needed(link, cs.cid, files, timeout)
    for spec in files:
        if await send_file(link, cs.cid, spec.local, spec.relpath, timeout) is not None:
            return
    link.send(messages.Setup(cid=cs.cid), [setup_args])


async def files_needed(link: Peer, cid: str, files: list, timeout: float) -> list:
    """With a shared ``dest_path`` the node may have the files already: skip those."""
    listing = []
    for spec in files:
        try:
            st = os.stat(spec.local)
        except OSError:
            return files  # the send reports the problem
        listing.append({"path": spec.relpath, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    answer = await request(link, messages.FilesCheck(cid=cid, files=listing), (), timeout)
    if answer is None:
        return files
    need = set(answer.paths or ())
    return [spec for spec in files if spec.relpath in need]


async def request(link: Peer, msg: messages.Record, bufs: list | tuple,
                  timeout: float) -> messages.Reply | None:
    """Send ``msg`` and wait for the peer's reply to it (None if none came, or a
    malformed one)."""
    if link.conn is None:
        return None
    answer = await link.conn.request(msg, bufs, timeout)
    if answer is None:
        return None
    try:
        return messages.parse_reply(answer)
    except messages.MessageError as exc:
        log.warning("%s: dropped a reply: %s", link.describe(), exc)
        return None


async def send_file(link: Peer, cid: str, local: str, relpath: str, timeout: float,
                    confirm: bool = False, node: list | None = None,
                    xfer: str | None = None) -> str | None:
    """Send a file in chunks (for dispyscheduler: to ``node``, as transfer ``xfer``);
    None when it went (with ``confirm``: when the peer kept it), else why not."""
    try:
        for chunk, data in file_chunks(cid, local, relpath, node, xfer):
            if chunk.final and confirm:
                answer = await request(link, chunk, [data], timeout)
                if answer is None:
                    return f"no answer from {link.describe()}"
                return None if answer.ok else answer.reason or "refused"
            if not link.send(chunk, [data]):
                return f"connection to {link.describe()} lost"
            if link.conn is not None:
                await link.conn.drain()
        return None
    except (OSError, ConnectionError) as exc:
        log.warning("could not send %s to %s: %s", local, link.describe(), exc)
        return str(exc) or exc.__class__.__name__


def send_job_files(link: Peer, cid: str, uid: str, files: list) -> str | None:
    """A job's ``dispy_job_depends`` files, whole, ahead of the job; None, or why one
    could not be read (the job then ends Cancelled with that reason)."""
    for spec in files:
        try:
            st = os.stat(spec.local)
            with open(spec.local, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            log.error("dispy_job_depends: cannot read %s: %s", spec.local, exc)
            return f"dispy_job_depends: cannot read {spec.local}: {exc}"
        link.send(file_record(cid, spec.relpath, st, 0, True, job=uid), [data])
    return None


def file_chunks(cid: str, local: str, relpath: str, node: list | None = None,
                xfer: str | None = None) -> Iterator[tuple[messages.File, bytes]]:
    """A file as the (record, bytes) of its "file" frames; OSError if it can't be read."""
    st = os.stat(local)
    with open(local, "rb") as fh:
        offset = 0
        while True:
            chunk = fh.read(config.FileChunkSize)
            final = offset + len(chunk) >= st.st_size
            yield file_record(cid, relpath, st, offset, final, node=node, xfer=xfer), chunk
            if final:
                return
            offset += len(chunk)


def file_record(cid: str, relpath: str, st: os.stat_result, offset: int, final: bool,
                **more: Any) -> messages.File:
    """A "file" frame: the node keeps the exact mtime and mode."""
    return messages.File(cid=cid, path=relpath, size=st.st_size, mtime=st.st_mtime,
                         mtime_ns=st.st_mtime_ns, mode=st.st_mode & 0o7777, offset=offset,
                         final=final, **more)
