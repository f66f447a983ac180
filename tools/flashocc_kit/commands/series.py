"""`kit.py series`: each project's patch queue, listed, or put on a git branch and back (as `gbp pq` does).

    kit.py series [PROJECT...]       the patches in order: what each changes and why
    kit.py series import PROJECT     the queue as commits on patch-queue/kit in the checkout, checked out
    kit.py series export PROJECT     the branch written back to patches/ and port/, the root patch rebuilt
    kit.py series drop PROJECT       discard the branch; the checkout back on the pin, the root patch applied
"""

from __future__ import annotations

import argparse
import json

from .. import gitutil, patchqueue, series, sources
from ..errors import KitError
from ..workspace import Workspace
from .export import export

ACTIONS = ("import", "export", "drop")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("series", help="list the patch queues, or import one onto a git branch and export it back",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # REMAINDER: `series export --check mmcv` as well as `series export mmcv --check`
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="[ACTION] PROJECT",
                   help=f"an action ({', '.join(ACTIONS)}) and its project, or projects to list (default: all four)")
    p.add_argument("--check", action="store_true", help="listing: only check the queues (fields, series, port "
                                                        "files); export: write nothing, exit 1 if a file is stale")
    p.add_argument("--json", action="store_true", help="machine-readable listing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    flags = {"--check", "--json"}
    words = [w for w in args.words if w not in flags]
    check, as_json = args.check or "--check" in args.words, args.json or "--json" in args.words
    unknown = [w for w in words if w.startswith("-")]
    if unknown:
        raise KitError(f"series: unknown option {unknown[0]}. Fix: `kit.py series --help` lists the options")
    if words and words[0] in ACTIONS:
        action, names = words[0], words[1:]
        if action == "export":
            return export(ws, names, check)
        if len(names) != 1:
            raise KitError(f"series {action}: name one project ({', '.join(ws.projects)})")
        project = ws.select(names)[0]
        checkout = ws.dir(project.name)
        if not gitutil.is_git_toplevel(checkout):
            raise KitError(f"{project.name}: no git checkout at {checkout}. Fix: `python3 tools/kit.py sources`")
        if action == "drop":
            patchqueue.drop_queue(project, checkout)
            print(f"dropped {patchqueue.QUEUE_BRANCH} in {checkout}; {project.patch} applied")
            return 0
        count = patchqueue.import_queue(project, checkout, sources.base_commit_for_export(project, checkout))
        print(f"imported {count} patches onto {patchqueue.QUEUE_BRANCH} in {checkout}. Edit with git (`rebase -i`, "
              f"`commit --amend`; a new commit is a new patch), then `python3 tools/kit.py series export "
              f"{project.name}`")
        return 0
    return list_queues(ws, words, check, as_json)


def list_queues(ws: Workspace, names: list[str], check: bool, as_json: bool) -> int:
    problems, listing = [], []
    for project in ws.select(names):
        problems += series.check_queue(project)
        if check:
            continue
        for number, patch in enumerate(series.read_queue(project), start=1):
            listing.append({"project": project.name, "number": number, "name": patch.name,
                            "summary": patch.summary, "origin": patch.fields.get("Origin", ""),
                            "forwarded": patch.fields.get("Forwarded", ""), "files": patch.touched,
                            "kit_files": patch.kit_files})
    if as_json:
        print(json.dumps(listing, indent=2))
    else:
        project = None
        for row in listing:
            if row["project"] != project:
                project = row["project"]
                print(f"{project} ({ws.projects[project].queue_dir}):")
            print(f"  {row['number']:2d} {row['name']}: {row['summary']}\n     origin: {row['origin']}")
            for rel in row["files"]:
                print(f"     ~ {rel}")
            for rel in row["kit_files"]:
                print(f"     + {rel} (port/{project}/)")
    if problems:
        raise KitError("the patch queues are inconsistent:\n  " + "\n  ".join(problems)
                       + "\nFix: correct patches/ or port/ as each line says")
    return 0
