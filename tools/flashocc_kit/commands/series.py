"""`kit.py series`: each project's patch queue: the patches in order, what each changes and why."""

from __future__ import annotations

import argparse
import json

from .. import series
from ..errors import KitError
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("series", help="list the patch queues: each patch's files and reason, in the order they apply")
    p.add_argument("projects", nargs="*", help="default: all four")
    p.add_argument("--check", action="store_true", help="only check the queues (fields, series, port files)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--add", metavar="NAME", help="append a new, empty patch to one project's queue "
                                                "(then edit the checkout and `kit.py export --into NAME`)")
    p.add_argument("--description", help="with --add: what the change is and why; first line = summary")
    p.add_argument("--origin", default="vendor", help="with --add: DEP-3 Origin (default vendor: the kit's own)")
    p.add_argument("--forwarded", default="no", help="with --add: DEP-3 Forwarded (default no)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    if args.add:
        if len(args.projects) != 1:
            raise KitError("--add: name the one project whose queue gets the patch")
        patch = series.add_patch(ws.select(args.projects)[0], args.add, args.description or "", args.origin,
                                 args.forwarded)
        print(f"added {patch.path}; edit the checkout, then `python3 tools/kit.py export {args.projects[0]} "
              f"--into {patch.name}`")
        return 0
    problems, listing = [], []
    for project in ws.select(args.projects):
        problems += series.check_queue(project)
        if args.check:
            continue
        for number, patch in enumerate(series.read_queue(project), start=1):
            listing.append({"project": project.name, "number": number, "name": patch.name,
                            "summary": patch.summary, "origin": patch.fields.get("Origin", ""),
                            "forwarded": patch.fields.get("Forwarded", ""), "files": patch.touched,
                            "kit_files": patch.kit_files})
    if args.json:
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
        raise KitError("the patch queues are inconsistent:\n  " + "\n  ".join(problems))
    return 0
