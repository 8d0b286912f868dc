"""The node daemon's job path: queue, dispatch to job processes, results, cancel.

Each job process of a computation connects to the daemon's Unix socket (showing the
computation's token), so a job and its result cross one local socket, not two. The
computation host is asked only for what needs its process: fork, signal, reap.
The daemon (daemon.py) holds one ``JobRunner`` and feeds it requests and links.

Short jobs are sent ahead: when every CPU is busy and a computation's jobs run for
``PIPELINE_BELOW`` seconds or less on average, a job process that runs one of its jobs
is sent up to ``PIPELINE_DEPTH - 1`` more, which it reads from its socket as it
finishes (one write carries several, their results come back in fewer reads, and no
CPU waits for the daemon between two jobs). Such a job has not started: a cancel asks the
host to name it in the process's slot (``SkipJob``); under a lock the process and the
host share, the host does so only if the process has not taken the job yet, and
answers which (``Skipped``): a skipped job ends Cancelled at once and never runs, a
taken one is cancelled as a running job. Its ``dispy_job_timeout`` clock starts when
the job before it ends, and if the process dies first it goes back to the head of the
queue to run elsewhere. A cancel's escalation (SIGTERM, SIGKILL) stops once the process
runs another job, so it never hits the jobs after the cancelled one.
"""

from __future__ import annotations

import asyncio
import logging
import pickle  # only to encode None; the daemon never unpickles
import time
from collections import deque
from typing import Any, Protocol

from .. import fsafe
from ..daemon.files import too_big
from ..eventloop import within
from ..wire import hostmsg, messages
from ..wire.codec import FrameError
from ..wire.connection import Connection, ConnectionClosed
from ..wire.status import CANCELLED, TERMINATED
from . import lanes, results, service, timeouts
from .computation import Computation, JobLink, SpareHost
from .disk import NodeDisk
from .session import Session

log = logging.getLogger("dispy.node")

_NONE = pickle.dumps(None)

#: jobs a job process holds at most (the one it runs and those sent ahead)
PIPELINE_DEPTH = 4
#: jobs are sent ahead only for computations whose jobs run this long or less (s)
PIPELINE_BELOW = 0.005
#: an ack that came before a lane's result reached the daemon is kept this long (s)
LANE_ACKS_KEPT = 60.0
#: cancels of jobs that may still come on a lane, kept at most (per computation)
LANE_CANCELS_KEPT = 10_000


class JobHost(Protocol):
    """What the job path needs of the node daemon (node/daemon.py)."""

    cpus: int
    accepting: bool
    service_state: str
    opts: Any
    sessions: dict[str, Session]
    served: int
    metrics: Any
    spare: SpareHost
    disk: NodeDisk

    def service_text(self) -> str: ...

    def report_soon(self, session: Session, uid: str) -> None: ...

    def maybe_finish(self) -> None: ...

    def spawn(self, coro: Any) -> asyncio.Task: ...

    async def close_computation(self, comp: Computation, status: int, reason: str,
                                notify: bool, release: bool = True) -> None: ...


class JobRunner:
    """Jobs of all computations on this node, sharing its CPUs."""

    def __init__(self, node: JobHost) -> None:
        self.node = node
        self.busy = 0
        self.jobs_done = 0
        self.cpu_time = 0.0
        #: jobs ended, by final status (--metrics_port)
        self.ended: dict[int, int] = {}
        #: jobs waiting for a CPU (or for their computation's job process)
        self.waiting: deque[tuple[Computation, messages.Job, list]] = deque()
        #: uids of jobs killed at service end; their clients were already told
        self.killed: set[str] = set()
        #: computation token -> computation, for job processes connecting
        self.job_tokens: dict[str, Computation] = {}
        #: dispy_job_timeout (timeouts.py)
        self.timers = timeouts.JobTimers(self.cancel)

    # ---- from the client ---------------------------------------------------------

    def job(self, session: Session, job: messages.Job, bufs: list[bytes]) -> None:
        comp = session.computations.get(job.cid)
        uid = job.uid
        reason = None
        if comp is None or not comp.ready or comp.host is None:
            reason = "computation is not set up on this node"
        elif comp.failed is not None:
            reason = comp.failed
        elif not self.node.accepting:
            reason = "node is shutting down"
        elif self.node.service_state != service.OPEN:
            reason = f"node is {self.node.service_text()}"
        if reason is not None:
            log.debug("job %s refused: %s", uid, reason)
            session.send(messages.JobRefused(cid=job.cid, uid=uid, reason=reason))
            return
        assert comp is not None
        if (uid in comp.running or any(uid in link.skipped for link in comp.links.values())
                or any(c is comp and j.uid == uid for c, j, _ in self.waiting)):
            # the first one reports; a second would take a CPU that no result frees
            log.warning("ignored job %s from %s: a job with this id is already here", uid,
                        session.describe())
            return
        failed = comp.failed_job_files.pop(uid, None)
        if failed is not None:
            log.warning("job %s of %r not run: %s", uid, comp.name, failed)
            self._end_job(comp, uid, TERMINATED, failed)
            return
        log.debug("job %s of %r from %s queued", uid, comp.name, session.describe())
        self.waiting.append((comp, job, bufs))
        self.start_jobs()

    # ---- lanes (node/lanes.py) -----------------------------------------------------

    def lanes_allowed(self, comp: Computation | None) -> str | None:
        """Why a lane for ``comp`` is refused now, or None."""
        if comp is None or not comp.ready or comp.host is None or comp.closing is not None:
            return "computation is not set up on this node"
        if comp.failed is not None:
            return comp.failed
        if not self.node.accepting or self.node.service_state != service.OPEN:
            return "node is not accepting jobs"
        if any(other is not comp for s in self.node.sessions.values()
               for other in s.computations.values()):
            return "another computation shares this node"
        return None

    def attach_lane(self, session: Session, cid: str, conn: Connection) -> bool:
        """A program's lane for its computation ``cid``: handed to a job process of it
        that has none, an idle one first (the daemon's own jobs still go to that process
        too; a busy one reads its lane once the jobs sent to it are done, so a program
        that keeps this node busy, as with big jobs, still gets its lanes). False:
        refused (the program was told why)."""
        comp = session.computations.get(cid)
        reason = self.lanes_allowed(comp)
        later = False
        if reason is None and comp is not None and sum(
                ln.lane for ln in comp.links.values()) >= lanes.PER_COMPUTATION:
            reason = f"{lanes.PER_COMPUTATION} lanes already"
        if reason is None and not lanes.handable(conn):
            reason = "the socket could not be handed over"
        if reason is None and comp is not None:
            idle = [ln for ln in comp.idle if not ln.lane]
            busy = sorted((ln for ln in comp.links.values() if ln not in idle
                           and not (ln.lane or ln.lost or ln.cancelled or ln.settling)),
                          key=lambda ln: len(ln.sent))
            for link in idle + busy:
                if lanes.hand_over(conn, link.conn):
                    link.lane = True
                    log.debug("lane of %r handed to job process %d", comp.name, link.pid)
                    return True
            later = len(comp.links) < min(self.node.cpus, lanes.PER_COMPUTATION) \
                or any(not ln.lane for ln in comp.links.values())
            reason = "no job process without a lane could take it now"
        log.debug("lane for %s refused: %s", cid, reason)
        conn.send(messages.LaneRefused(reason=str(reason), later=later))
        return False

    def close_lanes(self, keep: Computation | None = None) -> None:
        """Job processes close their lanes (the program's next jobs come this way)."""
        for session in self.node.sessions.values():
            for comp in session.computations.values():
                if comp is keep:
                    continue
                for link in comp.links.values():
                    if link.lane and not link.lost:
                        link.lane = False
                        link.send(hostmsg.LaneClose(), now=True)

    def _lane_started(self, comp: Computation, link: JobLink, uid: str) -> None:
        """A process takes a job from its lane: counted as any job running there. A job
        the daemon had sent it meanwhile (its head) has not started after all: it waits
        behind, as one sent ahead (its clock starts when the lane's job ends)."""
        if uid in comp.running or link.lost or any(j.uid == uid for j, _, _ in link.sent):
            log.warning("computation %r: job process %d took %s from its lane, a job"
                        " already here", comp.name, link.pid, uid)
            return
        job = messages.Job(cid=comp.cid, uid=uid)
        if link.uid is None:
            if link in comp.idle:
                comp.idle.remove(link)
            self.busy += 1
        else:
            self.timers.disarm(comp, link.uid)
            if link.cancelled:  # (its cancel is the head's: applied when that one starts)
                link.cancelling.add(link.uid)
                link.cancelled = False
        link.sent.appendleft((job, None, 0))
        link.uid = uid
        link.started = time.time()
        comp.running[uid] = link
        if comp.lane_cancels and comp.lane_cancels.pop(uid, None) is not None:
            self.cancel(comp, uid)  # (the program cancelled it before it was taken)
        elif self.node.service_state == service.CLOSED:  # (taken as the window closed)
            self.kill_running(f"node is {self.node.service_text()}")

    def _lane_done(self, comp: Computation, link: JobLink,
                   msg: hostmsg.LaneDone | hostmsg.LaneDoneInFile, bufs: list) -> None:
        """A job the program sent on a lane ended: kept until acknowledged, as any result
        (sent the usual way if the lane did not carry it); a big one in its file."""
        uid = msg.uid
        if link.uid == uid:
            done: messages.Done = msg
            file = None
            if isinstance(msg, hostmsg.LaneDoneInFile):
                done, bufs, file = self._result_file(comp, link, msg,
                                                     populate=not msg.delivered)
            self._job_done(comp, link, done, bufs, file,
                           carried=msg.delivered and done is msg)
        else:  # (only the job it said it took: never another one's)
            if isinstance(msg, hostmsg.LaneDoneInFile) and _own_file(comp, link, msg.file):
                self._remove_file(msg.file)
            log.warning("computation %r: dropped a lane result of job process %d for %s,"
                        " not the job it runs", comp.name, link.pid, uid)

    def lane_acked(self, session: Session, uids: list[str]) -> None:
        """Acks: a lane's result the program acknowledges before its job process gave the
        daemon its copy (the two come on different sockets) is dropped as that comes."""
        for uid in uids:
            if session.lane_sent.pop(uid, None) is not None or uid in session.undelivered:
                continue
            # running here and acked: only a lane can have carried its result (even one
            # whose lane closed since)
            if any(uid in comp.running for comp in session.computations.values()):
                session.lane_acks[uid] = time.monotonic()

    def forget_lane_acks(self, now: float) -> None:
        """(each second) Early acks whose copy never came (its process died), and cancels
        of jobs no lane brought."""
        for session in self.node.sessions.values():
            if session.lane_acks:
                old = [u for u, at in session.lane_acks.items() if now - at > LANE_ACKS_KEPT]
                for uid in old:
                    del session.lane_acks[uid]
            for comp in session.computations.values():
                if comp.lane_cancels:
                    old = [u for u, at in comp.lane_cancels.items()
                           if now - at > LANE_ACKS_KEPT]
                    for uid in old:
                        del comp.lane_cancels[uid]

    def unknown(self, session: Session, uids: list[str]) -> list[str]:
        """Which of ``uids`` this node does not know (recover_jobs asks, "jobs_query"):
        neither a result kept for the client nor a job running or waiting here. A result
        a lane carried is sent again the usual way (the program asks after a lane that
        closed with that job: it may not have read it)."""
        for uid in uids:
            if session.lane_sent.pop(uid, None) is not None and uid in session.undelivered:
                self.node.report_soon(session, uid)
        known = set(session.undelivered)
        for comp in session.computations.values():
            known.update(comp.running)
        known.update(job.uid for comp, job, _ in self.waiting if comp.session is session)
        return [uid for uid in uids if uid not in known]

    def cancel(self, comp: Computation, uid: str) -> None:
        link = comp.running.get(uid)
        if link is not None:
            if comp.host is None:
                return
            if link.uid != uid:  # sent ahead: skipped unless its process has taken it
                if uid not in link.skipping and uid not in link.cancelling:
                    link.skipping.add(uid)
                    seq = next(n for job, _, n in link.sent if job.uid == uid)
                    comp.host.send(hostmsg.SkipJob(pid=link.pid, uid=uid, seq=seq))
            elif not link.cancelled:
                link.cancelled = True
                comp.host.send(hostmsg.CancelJob(pid=link.pid, uid=uid))
            return
        for item in self.waiting:
            if item[0] is comp and item[1].uid == uid:
                self.waiting.remove(item)
                self._end_job(comp, uid, CANCELLED, "Cancelled")
                return
        if len(comp.lane_cancels) < LANE_CANCELS_KEPT:
            # maybe on a lane, not taken yet (a big job still arriving, or one behind the
            # daemon's job there): cancelled when its process says it takes it
            comp.lane_cancels[uid] = time.monotonic()

    def start_jobs(self) -> None:
        """Run waiting jobs while CPUs are free (the client may briefly send more). A
        computation without an idle job process asks its host for one and its job waits
        (at the head of the queue) until that process connects. With every CPU busy, a
        short job may go ahead to a busy process of its computation (``_ahead``).
        Outside service hours nothing starts: jobs that came back from a job process
        that died go back to their clients, as the waiting ones did when it stopped."""
        if self.node.service_state != service.OPEN:
            reason = f"node is {self.node.service_text()}"
            while self.waiting:
                comp, job, _ = self.waiting.popleft()
                self._refuse(comp, job.uid, reason)
            return
        while self.waiting:
            comp, job, bufs = self.waiting[0]
            if comp.host is None or comp.session.computations.get(comp.cid) is not comp:
                self.waiting.popleft()
                continue
            if comp.failed is not None:
                self.waiting.popleft()
                self._refuse(comp, job.uid, comp.failed)
                continue
            if self.busy < self.node.cpus:
                if not comp.idle:
                    if comp.forking == 0 and len(comp.links) < self.node.cpus:
                        comp.forking += 1
                        comp.host.send(hostmsg.Fork())
                    return
                link = _take_idle(comp.idle)
                self.busy += 1
            elif self.busy > self.node.cpus:  # fewer CPUs allowed now: none sent ahead
                return
            else:
                ahead = self._ahead(comp)
                if ahead is None:
                    return
                link = ahead
            self.waiting.popleft()
            comp.running[job.uid] = link
            link.seq += 1
            link.sent.append((job, bufs, link.seq))
            if link.uid is None:
                self._started(comp, link)
            else:
                log.debug("job %s of %r sent ahead to job process %d", job.uid, comp.name,
                          link.pid)
            # the last job waiting goes at once (it starts a loop turn sooner); the others
            # go at the end of this loop turn, those for one process in one write
            link.send(hostmsg.RunJob(uid=job.uid, oob=job.oob), bufs, now=not self.waiting)

    def _ahead(self, comp: Computation) -> JobLink | None:
        """The busy job process of ``comp`` to send one more job ahead to, if the
        computation's jobs are short. A process whose job has run longer than a short one
        does (it may be a long job) only when no other can take it; then the one with the
        fewest jobs sent to it, and of those the one whose job started last."""
        avg = comp.run_avg
        if avg is None or avg > PIPELINE_BELOW:
            return None
        since = time.time() - PIPELINE_BELOW
        best, best_key = None, None
        for link in comp.links.values():
            if (link.uid is None or link.cancelled or link.lost
                    or len(link.sent) >= PIPELINE_DEPTH):
                continue
            key = (link.started < since, len(link.sent), -link.started)
            if best_key is None or key < best_key:
                best, best_key = link, key
        return best

    def _started(self, comp: Computation, link: JobLink) -> None:
        """The first job sent to ``link`` is now the one its process runs."""
        job, bufs, seq = link.sent[0]
        if bufs is not None:
            link.sent[0] = (job, None, seq)  # no longer needed to run it elsewhere
        uid = link.uid = job.uid
        link.started = time.time()
        self.timers.arm(comp, uid, job.timeout)
        if uid in link.cancelling:  # cancelled once the process had taken it
            link.cancelling.discard(uid)
            self.cancel(comp, uid)

    # ---- job processes -------------------------------------------------------------

    def prefork(self, comp: Computation) -> int:
        """A job process per CPU, forked by the host as its setup ends (``HostInit.fork``,
        the count returned here, expected before the host is started so that none
        connects before it is expected): the client hears that setup is done while they
        fork, and jobs that come first wait for them here (a fork that fails breaks the
        computation: its jobs come back refused). ``setup_done`` starts the clock."""
        if comp.host is None or self.node.cpus <= 0:
            return 0
        comp.forked = asyncio.get_running_loop().create_future()
        comp.forking = self.node.cpus
        return comp.forking

    def setup_done(self, comp: Computation, ok: bool) -> None:
        """The host is ready (``ok``): the forks ``prefork`` expected have until
        --msg_timeout from now (setup may take longer than that); should they not all
        connect in time, later jobs ask for processes as they need them. Else they will
        not come."""
        if ok and comp.forked is not None and not comp.forked.done():
            self.node.spawn(self._forks_overdue(comp, comp.forked))
            return
        comp.forking = 0
        if comp.forked is not None and not comp.forked.done():
            comp.forked.set_result(None)

    async def _forks_overdue(self, comp: Computation, forked: asyncio.Future) -> None:
        try:
            await within(asyncio.shield(forked), self.node.opts.msg_timeout)
        except asyncio.TimeoutError:
            if comp.forked is forked and comp.closing is None:
                log.warning("computation %r: %d job process(es) not started in %s s",
                            comp.name, comp.forking, self.node.opts.msg_timeout)
                comp.forking = 0
                self.start_jobs()

    def _forked(self, comp: Computation) -> None:
        """One fewer job process to wait for (it connected, or forking failed)."""
        comp.forking = max(0, comp.forking - 1)
        if comp.forking == 0 and comp.forked is not None and not comp.forked.done():
            comp.forked.set_result(None)

    async def serve_job_link(self, conn: Connection) -> None:
        """A job process forked by a computation host connects here; its host's hello
        comes first. A frame that does not decode is dropped (the link kept)."""
        try:
            header, _ = await conn.recv(self.node.opts.msg_timeout)
            hello = hostmsg.parse_job_message(header)
        except (asyncio.TimeoutError, ConnectionClosed, FrameError, OSError):
            return
        except messages.MessageError as exc:
            log.warning("refused a job link: %s", exc)
            return
        if not isinstance(hello, hostmsg.Hello):
            log.warning("refused a job link that began with %r", hello.op)
            return
        comp = self.job_tokens.get(hello.token)
        pid = await self._link_pid(comp, hello)
        if comp is None or not isinstance(pid, int) or comp.closing is not None:
            return
        link = JobLink(pid, conn)
        comp.links[pid] = link
        comp.idle.append(link)
        self._forked(comp)
        self.start_jobs()

        def frame(header: dict, bufs: list) -> None:
            try:
                msg = hostmsg.parse_job_message(header)
            except messages.MessageError as exc:
                log.warning("computation %r: dropped a frame from job process %d: %s",
                            comp.name, pid, exc)
                return
            self._on_link(comp, link, msg, bufs)

        try:
            await conn.deliver_to(frame)  # a result per job: handled in the read callback
        finally:
            conn.close()
            self._link_lost(comp, link)

    async def _link_pid(self, comp: Computation | None, hello: hostmsg.Hello) -> int | None:
        """The pid of the job process behind a new link, as its host told us (never as
        the link claims it): signals and reaping go only to processes the host forked."""
        link_id = hello.link
        if comp is None:
            return None
        pid = comp.link_pids.pop(link_id, None)
        if pid is None and link_id not in comp.link_waiters:  # the host's word may lag
            fut = comp.link_waiters[link_id] = asyncio.get_running_loop().create_future()
            try:
                pid = await within(fut, self.node.opts.msg_timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                comp.link_waiters.pop(link_id, None)
        if pid is None or pid in comp.links:
            log.warning("computation %r: refused a job link the host did not fork",
                        comp.name)
            return None
        return pid

    def _on_link(self, comp: Computation, link: JobLink, msg: messages.Record,
                 bufs: list[bytes]) -> None:
        session = comp.session
        if isinstance(msg, hostmsg.LaneStarted):
            self._lane_started(comp, link, msg.uid)
        elif isinstance(msg, (hostmsg.LaneDone, hostmsg.LaneDoneInFile)):
            self._lane_done(comp, link, msg, bufs)
        elif isinstance(msg, hostmsg.LaneEnded):
            link.lane = False
            log.debug("computation %r: lane of job process %d ended: %s", comp.name,
                      link.pid, msg.reason)
        elif isinstance(msg, messages.Done):
            if link.uid != msg.uid:  # a process runs its jobs in the order sent
                if isinstance(msg, hostmsg.DoneInFile) and _own_file(comp, link, msg.file):
                    self._remove_file(msg.file)
                return
            file = None
            if isinstance(msg, hostmsg.DoneInFile):
                msg, bufs, file = self._result_file(comp, link, msg)
            self._job_done(comp, link, msg, bufs, file)
        elif isinstance(msg, messages.Provisional):
            session.send(messages.Provisional(uid=msg.uid, cid=comp.cid), bufs)
        elif isinstance(msg, hostmsg.JobSendFile):
            reason = too_big(msg.size, self.node.opts.max_file_size)
            if reason is None and not session.send(messages.SendFile(
                    cid=comp.cid, path=msg.path, size=msg.size, mtime=msg.mtime,
                    mode=msg.mode), bufs):
                reason = "client is not connected"
            link.send(hostmsg.FileReply(ok=reason is None, reason=reason))

    def _result_file(self, comp: Computation, link: JobLink, msg: hostmsg.DoneInFile,
                     populate: bool = True) -> tuple[messages.Done, list, str | None]:
        """The result a job process wrote to a file: mapped (and the file's name), or,
        when the file is not what the job process said, the job ends Terminated.
        ``populate``: its pages mapped at once (it is about to be sent)."""
        directory = self.node.disk.result_dir
        own = _own_file(comp, link, msg.file)
        try:
            if not own:
                raise ValueError(f"not a result file of process {link.pid}: "
                                 f"{msg.file[:40]!r}")
            return msg, results.map_result_file(directory, msg.file, msg.lens,
                                                populate), msg.file
        except (ValueError, OSError) as exc:
            log.warning("computation %r: result of job %s lost: %s", comp.name, msg.uid,
                        exc)
            if own:
                self._remove_file(msg.file)
            return messages.Done(
                uid=msg.uid, status=TERMINATED, text=msg.text, start_time=msg.start_time,
                end_time=msg.end_time, exception=f"the node lost the job's result: {exc}",
            ), [_NONE, b"", b""], None

    def _job_done(self, comp: Computation, link: JobLink | None, done: messages.Done,
                  bufs: list, file: str | None = None, carried: bool = False) -> None:
        """A job ended (``file``: its result is in that result file, see _report)."""
        uid = done.uid
        done = self.timers.settle(comp, done)
        log.debug("job %s of %r done: status %s", uid, comp.name, done.status)
        reported = False
        if link is not None and link.uid == uid:
            self._next_job(comp, link, done)
            # a SkipJob answer still to come is moot: the process reported it itself
            link.skipping.discard(uid)
            link.cancelling.discard(uid)
            if uid in link.skipped:  # it skipped it: reported Cancelled then
                link.skipped.discard(uid)
                reported = True
        if not reported:
            comp.running.pop(uid, None)
            self._report(comp, done, bufs, file, carried)
        elif file is not None:
            self._remove_file(file)
        self._close_if_broken(comp)
        self.start_jobs()
        self.node.spare.job_ended()
        self.node.maybe_finish()

    def _next_job(self, comp: Computation, link: JobLink, done: messages.Done) -> None:
        """The job ``link`` ran has ended: its process goes on with the next job sent
        to it, or becomes idle."""
        link.sent.popleft()
        link.uid = None
        if link.cancelled and comp.host is not None and not link.lost:
            link.cancelled = False
            # the host stops its signal escalation; a process with no job sent ahead
            # takes another only once it has (Settled)
            comp.host.send(hostmsg.Settle(pid=link.pid))
            link.settling += 1
        if not link.lost:
            if link.sent:
                self._started(comp, link)  # the process reads it now
            elif not link.settling:
                comp.idle.append(link)
        if link.uid is None:
            self.busy -= 1
        ran = max(0.0, done.end_time - done.start_time)
        comp.run_avg = ran if comp.run_avg is None else 0.8 * comp.run_avg + 0.2 * ran

    def _report(self, comp: Computation, done: messages.Done, bufs: list,
                file: str | None = None, carried: bool = False) -> None:
        """Count a job that ended and keep its result for its client (with ``file``,
        in that result file until the client acknowledges it)."""
        uid = done.uid
        for path in comp.job_files.pop(uid, ()):
            fsafe.remove_beneath(comp.tree, path)
        self.jobs_done += 1
        comp.jobs_done += 1
        if uid in self.killed:  # its client was told at service end
            self.killed.discard(uid)
            if file is not None:
                self._remove_file(file)
        else:
            session = comp.session
            ran = max(0.0, done.end_time - done.start_time)
            comp.cpu_time += ran
            self.cpu_time += ran
            self.ended[done.status] = self.ended.get(done.status, 0) + 1
            if self.node.metrics is not None:
                self.node.metrics.job_ran(ran)
            # kept as its header: saved to disk and sent again until the client acks it
            session.undelivered[uid] = (done.client_header(comp.cid), bufs)
            session.unsaved[uid] = time.monotonic()
            old = session.result_files.pop(uid, None)
            if old is not None and old != file:  # (a result of the uid came before)
                self._remove_file(old)
            if file is not None:
                session.result_files[uid] = file
            if not carried:
                self.node.report_soon(session, uid)
            elif session.lane_acks.pop(uid, None) is not None:  # acked before it came here
                self.node.disk.acknowledged(session, [uid])
            else:  # a lane took it to the program: sent here only if it asks again
                session.lane_sent[uid] = time.monotonic()

    def _end_job(self, comp: Computation, uid: str, status: int, reason: str,
                 link: JobLink | None = None) -> None:
        """A job that ends without a result of its own (cancelled, timed out, process
        lost). Its start is when it reached a CPU, so the client's estimate of how long
        jobs run (which decides sending jobs ahead) sees the time it took."""
        now = time.time()
        start = link.started if link is not None and link.uid == uid else now
        self._job_done(comp, link, messages.Done(
            uid=uid, status=status, exception=reason, text=comp.kind != "program",
            start_time=start, end_time=now), [_NONE, b"", b""])

    def _take_back(self, comp: Computation, link: JobLink,
                   end: tuple[int, str] | None = None) -> None:
        """The jobs sent ahead to a job process that will not run them (it died, or
        its computation ends): those not cancelled (which were reported then) end with
        ``end`` or, without one, go back to the head of the queue in their order."""
        keep = 1 if link.uid is not None else 0
        back: list[tuple[Computation, messages.Job, list]] = []
        while len(link.sent) > keep:
            job, bufs, _ = link.sent.pop()
            uid = job.uid
            if comp.running.get(uid) is link:
                del comp.running[uid]
            if uid in link.skipped:
                link.skipped.discard(uid)
                continue
            if uid in link.skipping or uid in link.cancelling:  # cancelled, not reported
                link.skipping.discard(uid)
                link.cancelling.discard(uid)
                self._end_job(comp, uid, CANCELLED, "Cancelled")
            elif end is not None or bufs is None or uid in self.killed:
                self._end_job(comp, uid, *(end or (TERMINATED, "job process ended")))
            else:
                back.append((comp, job, bufs))
        self.waiting.extendleft(back)  # popped last first: extendleft restores the order

    def _link_lost(self, comp: Computation, link: JobLink) -> None:
        """A job process's connection closed: it died (or was killed)."""
        if link.lost:
            return
        link.lost = True
        comp.links.pop(link.pid, None)
        self.node.disk.remove_unclaimed_results(comp.result_tag, self._claimed(), link.pid)
        if link in comp.idle:
            comp.idle.remove(link)
        self._take_back(comp, link, comp.closing)
        if comp.closing is not None:
            if link.uid is not None:
                self._end_job(comp, link.uid, *comp.closing, link=link)
            return
        if comp.host is not None:
            comp.reaping[link.pid] = link
            comp.host.send(hostmsg.Reap(pid=link.pid))
        self.start_jobs()

    def finish_links(self, comp: Computation, reason: str) -> None:
        """End the jobs of a computation whose host has gone: none of them can report."""
        status, text = comp.closing or (TERMINATED, reason)
        for link in list(comp.links.values()) + list(comp.reaping.values()):
            self._take_back(comp, link, (status, text))
            if link.uid is not None:
                self._end_job(comp, link.uid, status, text, link=link)
            link.close()
        comp.links.clear()
        comp.reaping.clear()
        comp.idle.clear()
        comp.forking = 0
        if comp.forked is not None and not comp.forked.done():
            comp.forked.set_result(None)
        self.node.disk.remove_unclaimed_results(comp.result_tag, self._claimed())

    def _remove_file(self, name: str) -> None:
        results.remove_result_file(self.node.disk.result_dir, name)

    def _claimed(self) -> set[str]:
        """The result files that results waiting for acknowledgement are in."""
        return {file for session in self.node.sessions.values()
                for file in session.result_files.values()}

    # ---- from the computation host ----------------------------------------------------

    def on_host(self, comp: Computation, msg: messages.Record, bufs: list[bytes]) -> None:
        """A frame of the computation's host, decoded (computation.HostProcess)."""
        if isinstance(msg, hostmsg.Forked):
            waiter = comp.link_waiters.get(msg.link)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg.pid)
            else:
                comp.link_pids[msg.link] = msg.pid
        elif isinstance(msg, hostmsg.Reaped):
            link = comp.reaping.pop(msg.pid, None)
            if link is not None and link.uid is not None:
                status = CANCELLED if link.cancelled else TERMINATED
                self._end_job(comp, link.uid, status,
                              ("Cancelled: " if link.cancelled else "") + msg.reason,
                              link=link)
        elif isinstance(msg, hostmsg.Skipped):
            link = comp.links.get(msg.pid)
            if link is not None and msg.uid in link.skipping:
                self._skipped(comp, link, msg.uid, msg.reached)
        elif isinstance(msg, hostmsg.Settled):
            link = comp.links.get(msg.pid)
            if link is not None and link.settling:
                link.settling -= 1
                if (not link.settling and link.uid is None and not link.lost
                        and link not in comp.idle):
                    comp.idle.append(link)
                    self.start_jobs()
        elif isinstance(msg, (hostmsg.ForkFailed, hostmsg.HostLost)):
            if comp.closing is None:
                self._computation_broken(comp, msg.reason)
        elif isinstance(msg, hostmsg.ShutdownRequest):
            session = comp.session
            if not self.node.opts.client_shutdown:
                log.warning("client %s called dispynode_shutdown(): refused (node was not"
                            " started with --client_shutdown)", session.describe())
                return
            log.info("client %s called dispynode_shutdown(): the node quits once this"
                     " client's computations close", session.describe())
            self.node.opts.serve = self.node.served + 1

    def _skipped(self, comp: Computation, link: JobLink, uid: str, reached: bool) -> None:
        """The host answered a SkipJob: the process will skip the job (it ends Cancelled
        now), or had taken it already (it is cancelled as a running job)."""
        link.skipping.discard(uid)
        if not reached:
            link.skipped.add(uid)
            self._end_job(comp, uid, CANCELLED, "Cancelled")
        elif link.uid == uid:
            self.cancel(comp, uid)
        elif any(job.uid == uid for job, _, _ in link.sent):  # its turn not seen here yet
            link.cancelling.add(uid)
        # else it ended already, reported with its own status

    def _computation_broken(self, comp: Computation, reason: str) -> None:
        """Its host died or cannot fork: the jobs already running still report, the
        waiting ones go back to the client (reentrant ones run elsewhere), and the
        client stops sending jobs of it here."""
        if comp.failed is not None:
            return
        log.error("computation %r of %s: %s", comp.name, comp.session.describe(), reason)
        comp.failed = reason
        comp.forking = 1
        self._forked(comp)
        comp.session.send(messages.ComputationLost(cid=comp.cid, reason=reason))
        for item in [i for i in self.waiting if i[0] is comp]:
            self.waiting.remove(item)
            self._refuse(comp, item[1].uid, reason)
        for link in list(comp.reaping.values()):
            if link.uid is not None:
                self._end_job(comp, link.uid, TERMINATED, reason, link=link)
        comp.reaping.clear()
        self._close_if_broken(comp)
        self.start_jobs()

    def _close_if_broken(self, comp: Computation) -> None:
        """A broken computation closes (freeing the node) once its last job reported."""
        if comp.failed is not None and comp.ready and not comp.running:
            comp.ready = False
            self.node.spawn(self.node.close_computation(comp, TERMINATED, comp.failed,
                                                        notify=False))

    def _refuse(self, comp: Computation, uid: str, reason: str) -> None:
        comp.session.send(messages.JobRefused(cid=comp.cid, uid=uid, reason=reason))

    def kill_running(self, reason: str) -> None:
        """Service end: kill running jobs; their clients resubmit them (reentrant) or
        end them with the reason."""
        for session in self.node.sessions.values():
            for comp in session.computations.values():
                for uid, link in list(comp.running.items()):
                    if uid in self.killed or comp.host is None:
                        continue
                    self.killed.add(uid)
                    link.cancelled = True
                    session.send(messages.JobRefused(
                        cid=comp.cid, uid=uid, status=TERMINATED,
                        reason=f"service window ended; job killed ({reason})"))
                    comp.host.send(hostmsg.KillJob(pid=link.pid))
                    log.info("job %s of %s killed at service end", uid, session.describe())


def _own_file(comp: Computation, link: JobLink, name: str) -> bool:
    """``name`` is a result file name of ``link``'s process (its pid and its
    computation's tag): the only files a job process may make the daemon map or remove."""
    match = results.FILE_NAME.fullmatch(name)
    return match is not None and int(match.group(1)) == link.pid and \
        match.group(2) == comp.result_tag


def _take_idle(idle: list[JobLink]) -> JobLink:
    """The idle process the daemon's next job goes to: the last one idle, of those
    without a lane if any (a lane's job may be on its way to the others)."""
    link = idle[-1]
    if link.lane:
        for i in range(len(idle) - 2, -1, -1):
            if not idle[i].lane:
                return idle.pop(i)
    return idle.pop()
