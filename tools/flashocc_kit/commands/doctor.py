"""`kit.py doctor`: is this environment ready to train FlashOCC, and if not, what fixes it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..argtypes import existing_dir
from ..health import run_checks
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the environment and the checkouts; say how to fix what is missing")
    p.add_argument("--venv", type=existing_dir, help="environment to check (default: <workspace>/.venv)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    venv = Path(args.venv).resolve() if args.venv else ws.default_venv
    checks = run_checks(ws, venv)
    if args.json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        print("\n".join(c.line() for c in checks))
    failed = [c for c in checks if c.required and not c.ok]
    if failed:
        print(f"\n{len(failed)} problem(s): training is not possible until they are fixed.", file=sys.stderr)
        return 1
    return 0
