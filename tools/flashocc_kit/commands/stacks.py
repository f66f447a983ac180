"""`kit.py stacks`: the support matrix (stack, Python, architecture, lock) and when each cell was set up and
tested here."""

from __future__ import annotations

import argparse
import json

from ..stacks import matrix_rows
from ..tables import format_table
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stacks", help="the support matrix: stacks x Pythons x architectures, set up / tested here")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = matrix_rows(Workspace.at(args.workspace).root)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0
