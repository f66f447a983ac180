"""`kit.py sources`: put each upstream project at its pin into the workspace."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import sources
from ..errors import KitError
from ..pins import default_sources_dir
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sources", help="put each upstream project at its pin into the workspace")
    p.add_argument("projects", nargs="*", help="default: all four")
    p.add_argument("--from", dest="from_dir",
                   help="directory of pristine checkouts to copy instead of cloning "
                        "(default: $FLASHOCC_KIT_SOURCES, else ~/.cache/flashocc-kit/sources if present)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    from_dir = Path(args.from_dir) if args.from_dir else default_sources_dir()
    if from_dir is not None and not from_dir.is_dir():
        raise KitError(f"--from {from_dir}: no such directory")
    print(f"workspace {ws.root}" + (f", pristine checkouts from {from_dir}" if from_dir else ""))
    for project in ws.select(args.projects):
        sources.obtain(project, ws.root, from_dir)
    return 0
