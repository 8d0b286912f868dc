"""``dispy`` (also ``python -m dispy``): subcommands run, status and ssh."""

from __future__ import annotations

import argparse
import sys

from . import run, ssh, status


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dispy", description="dispy from the command line.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parser(sub)
    status.add_parser(sub)
    ssh.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    node_args: list[str] = []
    if words[:1] == ["ssh"]:  # what follows -- is dispynode's
        words, node_args = ssh.split_node_args(words)
    args = parser().parse_args(words)
    args.node_args = node_args
    return int(args.handler(args))


def dispy_cmd() -> int:
    """4.15's ``dispy_cmd.py COMPUTATION [-a ARGS]...``: ``dispy run`` with its options."""
    return main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
