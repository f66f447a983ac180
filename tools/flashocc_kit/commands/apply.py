"""`kit.py apply`: apply the kit's root patches, all or nothing per project (or take them out again)."""

from __future__ import annotations

import argparse

from ..patching import revert_patch
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apply", help="apply the kit's patches, all or nothing per project")
    p.add_argument("projects", nargs="*", help="default: all four")
    p.add_argument("--revert", action="store_true", help="take the patches back out instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    if args.revert:
        for project in reversed(ws.select(args.projects)):
            print(f"{revert_patch(project.name, ws.dir(project.name), project.patch_file):16s} {project.patch}")
        return 0
    ws.apply_all(args.projects)
    return 0
