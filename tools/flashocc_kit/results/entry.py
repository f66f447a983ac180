"""Run one results command outside kit.py (tests, other tools), as `kit.py <command>` would."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import KitError
from ..pins import default_workspace


def run_command(register: Callable[[argparse._SubParsersAction], None], argv: list[str]) -> int:
    """Parse argv with the command's own register(), run it; a KitError is a message and exit 2, as in cli.main."""
    parser = argparse.ArgumentParser(prog="kit.py")
    parser.add_argument("--workspace", default=str(default_workspace()))
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    register(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
