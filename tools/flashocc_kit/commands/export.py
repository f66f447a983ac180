"""`kit.py export`: the patch queue written back from its git branch (or rebuilt from patches/), the root patch built.

With a queue imported (`kit.py series import`), the branch's commits become the queue, the port files and the
root patch, and the checkout goes back to the pin with the root patch applied. Without one, the queued patches
are normalised and the root patch rebuilt from them and port/. With --check nothing is written: exit 1 when a
committed file is not what the queue builds (the test suite runs this).
"""

from __future__ import annotations

import argparse

from .. import gitutil, sources
from ..errors import KitError
from ..patchqueue import QUEUE_BRANCH, export_project, read_record, shown, stale_files
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the patch queue back from its branch (or rebuild it), build root patches",
                       description=__doc__.splitlines()[0])
    p.add_argument("projects", nargs="*", help="flashocc, mmcv, mmdet and/or mmdet3d (default: all four)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed file is stale")
    p.add_argument("--into", help=argparse.SUPPRESS)  # gone: named here to say what replaced it
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.into is not None:
        raise KitError(f"--into {args.into}: export no longer takes a checkout's edits. Fix: `kit.py series import "
                       "PROJECT`, amend that patch's commit with git, then `kit.py series export PROJECT`")
    return export(Workspace.at(args.workspace), args.projects, args.check)


def export(ws: Workspace, names: list[str], check: bool) -> int:
    stale = []
    for project in ws.select(names):
        checkout = ws.dir(project.name)
        if not gitutil.is_git_toplevel(checkout):
            raise KitError(f"{project.name}: no git checkout at {checkout} to build {project.patch} in. "
                           "Fix: `python3 tools/kit.py sources`.")
        base = sources.base_commit_for_export(project, checkout)
        if check:
            found = [shown(path) for path in stale_files(project, checkout, base)]
            print(f"{'STALE' if found else 'current':9s} {project.patch}")
            for path in found:
                print(f"  {path}: not what export writes")
            stale += found
            if read_record(checkout):
                print(f"  ({project.path} has {QUEUE_BRANCH}: `kit.py series export {project.name}` writes it)")
            continue
        result = export_project(project, checkout, base)
        print(f"{'written' if result.written else 'unchanged':9s} {project.patch}")
        for path in result.written:
            print(f"  {shown(path)}")
        if result.checkout:
            print(f"  {result.checkout}")
    if stale:
        print(f"{len(stale)} file(s) stale. Fix: `python3 tools/kit.py export`, then commit the result.")
        return 1
    return 0

