"""`kit.py export`: a patched checkout's edits go into the patch queue and the port; the root patch is rebuilt.

With --check, nothing is written: the exit status says whether each committed root patch is what its queue
and port build (the test suite runs this).
"""

from __future__ import annotations

import argparse

from .. import sources
from ..errors import KitError
from ..exporting import export_project, stale_files
from ..series import read_queue
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="put a checkout's edits into the patch queue and port/, rebuild the root patch",
                       description=__doc__.splitlines()[0])
    p.add_argument("projects", nargs="*", help="flashocc, mmcv, mmdet and/or mmdet3d (default: all four)")
    p.add_argument("--into", metavar="PATCH",
                   help="the queued patch an edit belongs to (default: the last one that changes that file; "
                        "required for files no patch changes yet); `kit.py series` lists them")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed root patch is stale")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    projects = ws.select(args.projects)
    if args.into and len(projects) != 1:
        raise KitError("--into names a patch of one project's queue: name that one project")
    if args.into:
        names = [patch.name for patch in read_queue(projects[0])]
        if args.into not in names:
            raise KitError(f"--into {args.into}: no such patch in the {projects[0].name} series. Fix: name one of "
                           f"{', '.join(names)} (`kit.py series {projects[0].name}`)")
    stale = []
    for project in projects:
        checkout = ws.dir(project.name)
        if not checkout.is_dir():
            raise KitError(f"{project.name}: no checkout at {checkout} to build {project.patch} in. "
                           "Fix: `python3 tools/kit.py sources`.")
        base = sources.base_commit_for_export(project, checkout)
        if args.check:
            found = [str(path.relative_to(project.patch_file.parent)) for path in stale_files(project, checkout, base)]
            print(f"{'STALE' if found else 'current':9s} {project.patch}")
            for path in found:
                print(f"  {path}: not what export writes")
            stale += found
            continue
        result = export_project(project, checkout, base, into=args.into)
        print(f"{'written' if result.patch_written else 'unchanged':9s} {project.patch}")
        for line in result.lines():
            print(line)
    if stale:
        print(f"{len(stale)} file(s) stale. Fix: `python3 tools/kit.py export`, then commit the result.")
        return 1
    return 0
