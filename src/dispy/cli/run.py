"""``dispy run PROGRAM -a ARGS ...``: run a program once per ``-a`` on dispy nodes and
print each run's exit status, output and where it ran (4.15's dispy_cmd)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import Any

import dispy

from ..client.job import STATUS_NAMES


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a program once per -a on the nodes",
                       description=__doc__)
    p.add_argument("program", help="path of the program (shipped), or a name on the"
                                   " nodes' PATH")
    p.add_argument("-a", "--args", dest="args", action="append", default=[],
                   metavar="ARGS", help="arguments of one run, split like a shell does"
                                        " (repeatable: one run each; none: one run)")
    p.add_argument("-n", "--nodes", dest="nodes", action="append", default=[],
                   metavar="NODE", help="node address, name or pattern (repeatable;"
                                        " default: every node that answers on the LAN)")
    p.add_argument("-f", "--file", dest="depends", action="append", default=[],
                   metavar="DEP", help="file the program needs on the nodes (repeatable)")
    p.add_argument("-s", "--secret", default="", help="the nodes' secret")
    p.add_argument("--node_port", type=int, default=None, help="the nodes' port")
    p.add_argument("--scheduler_node", default=None,
                   help="run through this dispyscheduler (SharedJobCluster)")
    p.add_argument("--scheduler_port", type=int, default=None)
    p.add_argument("--ip_addr", default=None, help="this machine's address to use")
    p.add_argument("--certfile", default=None)
    p.add_argument("--keyfile", default=None)
    p.add_argument("--dest_path", default=None, help="directory of the files on the nodes")
    p.add_argument("-c", "--no_cleanup", dest="cleanup", action="store_false",
                   help="leave the program and files on the nodes (4.15's -c)")
    p.add_argument("--timeout", type=float, default=None,
                   help="give up (cancel what is left) after this many seconds")
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    p.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> str | None:
    for path in args.depends:
        if not os.path.isfile(path):
            return f"dispy run: -f {path}: no such file"
    if os.sep in args.program and not os.path.isfile(args.program):
        return f"dispy run: {args.program}: no such file"
    for text in args.args:
        try:
            shlex.split(text)
        except ValueError as exc:
            return f"dispy run: -a {text!r}: {exc}"
    return None


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when every run finished with exit status 0, else 1 (2: bad use)."""
    error = _check(args)
    if error:
        print(error, file=sys.stderr)
        return 2
    kw: dict[str, Any] = {
        "nodes": args.nodes or ["*"], "depends": args.depends, "secret": args.secret,
        "certfile": args.certfile, "keyfile": args.keyfile, "dest_path": args.dest_path,
        "cleanup": args.cleanup, "ip_addr": args.ip_addr,
        "loglevel": logging.DEBUG if args.debug else logging.WARNING,
    }
    if args.node_port:
        kw["node_port"] = args.node_port
    try:
        if args.scheduler_node:
            cluster: Any = dispy.SharedJobCluster(
                args.program, scheduler_node=args.scheduler_node,
                scheduler_port=args.scheduler_port, **kw)
        else:
            cluster = dispy.JobCluster(args.program, port=0, **kw)
    except (ConnectionError, ValueError, OSError) as exc:
        print(f"dispy run: {exc}", file=sys.stderr)
        return 1
    failed = 0
    with cluster:
        jobs = [cluster.submit(*shlex.split(text)) for text in (args.args or [""])]
        for job, text in zip(jobs, args.args or [""], strict=True):
            job.id = text
        if not cluster.wait(args.timeout):
            print(f"dispy run: not done after {args.timeout} s: cancelling the rest",
                  file=sys.stderr)
            for job in jobs:
                cluster.cancel(job)
        for job in jobs:
            job()
            failed += _report(job)
        cluster.print_status()
    return 1 if failed else 0


def _report(job: Any) -> int:
    """Print one run; 1 if it failed."""
    where = job.ip_addr or "-"
    took = (job.end_time - job.start_time) if job.end_time and job.start_time else 0.0
    name = STATUS_NAMES.get(job.status, str(job.status))
    print(f"=== {job.id or '(no arguments)'}: {name} on {where} in {took:.3f} s"
          + (f", exit status {job.result}" if job.status == dispy.DispyJob.Finished else ""))
    for label, data in (("stdout", job.stdout), ("stderr", job.stderr)):
        if data:
            text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
            print(f"--- {label}:\n{text.rstrip()}")
    if job.exception:
        print(f"--- error:\n{str(job.exception).rstrip()}")
    return 0 if job.status == dispy.DispyJob.Finished and job.result == 0 else 1

