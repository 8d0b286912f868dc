"""The node's directory: owned with a lock, results kept in it, a socket beside it.

``<dest_path_prefix>/dispy/node-<port>`` is private (0700, refused when another local user
could plant symlinks in it), held with an flock the kernel drops when the node dies (even
``kill -9``: a stale file never stops a restart, a live node on it refuses a second one),
and keeps the results no client acknowledged yet (results.py), so a restarted node still
delivers them. Everything a node leaves behind, its next start finds and removes.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import stat
import tempfile

from .. import fsafe
from .results import ResultStore, remove_result_file, remove_result_files
from .session import Session

log = logging.getLogger("dispy.node")

#: Longest path of a Unix socket (sun_path is 108 bytes on Linux, with its NUL).
SOCKET_PATH_MAX = 107


def why(exc: BaseException) -> str:
    """An error as one line for a log or a peer (an OSError without its errno prefix)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


class NodeDisk:
    """The node's directory, its lock, its result log and its job socket's directory."""

    def __init__(self, prefix: str, port: int) -> None:
        self.prefix = prefix
        self.port = port
        self.root = os.path.join(prefix, "dispy", f"node-{port}")
        #: private directory of the Unix socket job processes connect to: under the
        #: node's own directory, so a node killed with -9 leaves nothing in /tmp (the next
        #: start removes it); if that path is too long for a socket, a temp directory
        #: named after the node's directory, so the next start finds and removes it too
        self.jobs_dir = os.path.join(self.root, "sockets")
        if len(os.path.join(self.jobs_dir, "jobs")) >= SOCKET_PATH_MAX:
            name = f"dispynode-{hashlib.sha256(self.root.encode()).hexdigest()[:16]}"
            self.jobs_dir = os.path.join(tempfile.gettempdir(), name)
            if len(os.path.join(self.jobs_dir, "jobs")) >= SOCKET_PATH_MAX:
                self.jobs_dir = os.path.join("/tmp", name)  # TMPDIR is long too
        self.jobs_path = os.path.join(self.jobs_dir, "jobs")
        #: where job processes write big results (results.py: FILE records)
        self.result_dir = os.path.join(self.root, "results")
        self.lock_fd: int | None = None
        self.store: ResultStore | None = None

    def lock(self, clean: bool) -> None:
        """Own ``root``; SystemExit with the reason when another node or user has it."""
        try:
            fsafe.private_tree(self.prefix, ("dispy", f"node-{self.port}"))
            fd = fsafe.open_beneath(self.root, os.path.join(self.root, "node.pid"),
                                    os.O_RDWR | os.O_CREAT, 0o600)
        except (ValueError, OSError) as exc:
            raise SystemExit(f"dispynode: cannot use {self.root}: {why(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SystemExit(
                f"dispynode: another dispynode (PID {pid}) serves port "
                f"{self.port} with {self.root}; stop it first"
            ) from None
        previous = os.read(fd, 32).decode(errors="replace").strip()
        if previous and not clean:
            log.info("previous dispynode (PID %s) is gone; taking over %s", previous, self.root)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.lock_fd = fd

    def clean(self) -> None:
        """--clean: remove files and saved results of earlier runs (all but the lock)."""
        fsafe.clear_tree(self.root, keep=("node.pid",))
        log.info("--clean: removed files of earlier runs in %s", self.root)

    def fresh_jobs_dir(self) -> None:
        """Remove what a killed predecessor left of the socket directory and make it
        anew. In the temp directory (shared with everyone) only a real directory of ours
        is removed; one that is not ours stops the start with a clear message."""
        try:
            st = os.lstat(self.jobs_dir)
        except FileNotFoundError:
            st = None
        if st is not None:
            if os.path.dirname(self.jobs_dir) != self.root and (
                    not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()):
                raise SystemExit(f"dispynode: {self.jobs_dir} exists and is not a directory"
                                 " of this user; remove it, or use a shorter"
                                 " --dest_path_prefix")
            shutil.rmtree(self.jobs_dir, ignore_errors=True)
        os.makedirs(self.jobs_dir, mode=0o700, exist_ok=True)

    def restore_results(self) -> dict[str, Session]:
        """Results kept by an earlier run, as the sessions of their clients (orphans that
        wait for recover_jobs)."""
        try:
            fsafe.private_tree(self.root, ("results",))  # (no symlink taken for it)
            self.store = ResultStore(os.path.join(self.root, "results.log"), self.result_dir)
        except (ValueError, OSError) as exc:
            raise SystemExit(f"dispynode: cannot keep results in {self.root}:"
                             f" {why(exc)}") from None
        kept = self.store.load()
        sessions = {}
        for sid, (name, results) in kept.items():
            session = Session(sid, "?", name, "?")
            session.orphan = True
            for header, bufs, file in results:
                session.undelivered[header["uid"]] = (header, bufs)
                session.saved.add(header["uid"])
                if file is not None:
                    session.result_files[header["uid"]] = file
            sessions[sid] = session
        if kept:
            log.info("kept %d undelivered result(s) of %d client(s) from an earlier run",
                     sum(len(r) for _, r in kept.values()), len(kept))
        return sessions

    def save_results(self, session: Session, older_than: float | None = None) -> None:
        """Write unacknowledged results to disk (all, or those older than the given time)."""
        uids = [uid for uid, t in session.unsaved.items()
                if older_than is None or t <= older_than]
        items = []
        for uid in uids:
            del session.unsaved[uid]
            entry = session.undelivered.get(uid)
            if entry is not None:
                items.append((session.sid, session.name, entry[0], entry[1],
                              session.result_files.get(uid)))
                session.saved.add(uid)
        if items and self.store is not None:
            try:
                self.store.save(items)
            except Exception as exc:  # e.g. a full disk: the results stay in memory
                log.warning("could not keep %d result(s) on disk: %s", len(items), exc)

    def acknowledged(self, session: Session, uids: list) -> None:
        """The client has these results: forget them, also on disk."""
        dropped = []
        for uid in uids:
            session.undelivered.pop(uid, None)
            session.unsaved.pop(uid, None)
            file = session.result_files.pop(uid, None)
            if uid not in session.saved and file is not None:  # (else the log's drop
                remove_result_file(self.result_dir, file)  # record goes first: results.py)
            if uid in session.saved:
                session.saved.discard(uid)
                dropped.append(uid)
        if dropped and self.store is not None:
            self.store.drop(session.sid, dropped)

    def remove_unclaimed_results(self, tag: str, claimed: set[str],
                                 pid: int | None = None) -> None:
        """Remove the result files of a computation (``tag``), or of one of its job
        processes (``pid``), that no result names: the process ended (or its
        computation did) between writing one and the daemon reading its
        ``DoneInFile``. The files of a result (mapped, maybe being sent) stay until
        it is acknowledged."""
        remove_result_files(self.result_dir, claimed, tag, pid)

    def flush(self) -> None:
        """Write the drops of acknowledged results that no save took along (each second)."""
        if self.store is not None:
            try:
                self.store.flush_drops()
            except OSError as exc:
                log.warning("could not update the result log: %s", exc)

    def close(self) -> None:
        """(stop) The result log closed, the lock released, the socket directory gone."""
        if self.store is not None:
            self.store.close()
        try:
            os.unlink(os.path.join(self.root, "node.pid"))
        except OSError:
            pass
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        shutil.rmtree(self.jobs_dir, ignore_errors=True)
