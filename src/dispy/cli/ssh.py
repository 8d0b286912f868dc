"""``dispy ssh start|stop HOST...``: dispynode on other machines, started over SSH
(see dispy.sshstart). Options after ``--`` are dispynode's."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..sshstart import SSHNodes


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ssh", help="start or stop dispynode on other machines over SSH",
        description="Start dispynode on each HOST over SSH and wait until it answers, or"
                    " stop the ones started so. Options after -- go to dispynode, e.g."
                    " dispy ssh start n1 n2 -- -s SECRET -c 4")
    p.add_argument("action", choices=("start", "stop"))
    p.add_argument("hosts", nargs="+", metavar="HOST", help="[user@]host, as ssh takes it")
    p.add_argument("-o", "--ssh-option", dest="ssh_options", action="append", default=[],
                   metavar="OPT", help="ssh -o option (repeatable), e.g. Port=2222")
    p.add_argument("-l", "--ssh-user", dest="user", default=None, help="remote user")
    p.add_argument("--identity", default=None, metavar="FILE", help="ssh private key")
    p.add_argument("--python", default="python3",
                   help="remote Python that has dispy installed (default python3)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for ssh and for the nodes to answer (default 60)")
    p.set_defaults(handler=run)


def split_node_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(dispy ssh's own words, dispynode's options after ``--``)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def run(args: argparse.Namespace) -> int:
    nodes = SSHNodes(args.hosts, args.node_args, args.ssh_options, args.user, args.identity,
                     args.python, args.timeout)
    if args.action == "stop":
        for host, what in nodes.stop():
            print(f"{host}: {what}")
        return 0
    results = nodes.start()
    for node in results:
        print(node.describe(), file=sys.stderr if node.error else sys.stdout)
    return 0 if all(n.error is None for n in results) else 1
