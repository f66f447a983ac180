"""`kit.py status`: one table of the checkouts: path, revision, pin and patch state."""

from __future__ import annotations

import argparse
import json

from ..tables import format_table
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="one table: revision, pin and patch state of each checkout")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    rows = ws.status_rows()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0 if ws.healthy() else 1
