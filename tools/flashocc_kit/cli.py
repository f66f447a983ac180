"""`python3 tools/kit.py <command>`: the kit's single entry point.

Each command is a small function here that delegates to the module that owns the job.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import sources
from .errors import KitError, exit_status
from .patchfile import read_patch_text
from .patching import PatchState, export_patch, patch_state, revert_patch
from .pins import default_sources_dir, default_workspace
from .workspace import Workspace


def cmd_sources(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    from_dir = Path(args.from_dir) if args.from_dir else default_sources_dir()
    if from_dir is not None and not from_dir.is_dir():
        raise KitError(f"--from {from_dir}: no such directory")
    print(f"workspace {ws.root}" + (f", pristine checkouts from {from_dir}" if from_dir else ""))
    for project in ws.select(args.projects):
        sources.obtain(project, ws.root, from_dir)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    if args.revert:
        for project in reversed(ws.select(args.projects)):
            print(f"{revert_patch(project.name, ws.dir(project.name), project.patch_file):16s} {project.patch}")
        return 0
    ws.apply_all(args.projects)
    return 0


def status_rows(ws: Workspace) -> list[dict[str, str]]:
    rows = []
    for project in ws.select(None):
        path = ws.dir(project.name)
        pin = sources.check_pin(project, path)
        state, _ = patch_state(path, project.patch_file)
        rows.append({
            "project": project.name,
            "path": str(path.relative_to(ws.root)) if path.is_relative_to(ws.root) else str(path),
            "revision": pin.revision,
            "pin ok": {True: "yes", False: "NO", None: "?"}[pin.ok],
            "patch": state.value,
        })
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(headers, widths)) for r in rows]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    rows = status_rows(ws)
    if args.json:
        import json
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    healthy = all(r["pin ok"] != "NO" and r["patch"] == PatchState.APPLIED.value for r in rows)
    return 0 if healthy else 1


def cmd_export(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    for project in ws.select(args.projects):
        path = ws.dir(project.name)
        base = sources.base_commit_for_export(project, path)
        text = export_patch(project.name, path, base, project.describe_pin())
        out = Path(args.output) if args.output else project.patch_file
        previous = read_patch_text(out) if out.exists() else None
        out.write_text(text, encoding="utf-8", errors="surrogateescape")
        verb = "unchanged" if previous == text else "written"
        files = text.count("\ndiff --git ")
        print(f"{verb:9s} {out} ({files} files)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kit.py", description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=str(default_workspace()),
                        help="where FlashOCC/, mmcv/, mmdetection/ live (default: the kit root, "
                             "or $FLASHOCC_KIT_WORKSPACE)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    p = sub.add_parser("sources", help="put each upstream project at its pin into the workspace")
    p.add_argument("projects", nargs="*", help="default: all four")
    p.add_argument("--from", dest="from_dir",
                   help="directory of pristine checkouts to copy instead of cloning "
                        "(default: $FLASHOCC_KIT_SOURCES, else ~/.cache/flashocc-kit/sources if present)")
    p.set_defaults(func=cmd_sources)

    p = sub.add_parser("apply", help="apply the kit's patches, all or nothing per project")
    p.add_argument("projects", nargs="*", help="default: all four")
    p.add_argument("--revert", action="store_true", help="take the patches back out instead")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("status", help="one table: revision, pin and patch state of each checkout")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", help="regenerate a project's .patch from its edited checkout")
    p.add_argument("projects", nargs="+", help="flashocc, mmcv, mmdet and/or mmdet3d")
    p.add_argument("--output", help="write here instead of the kit's .patch (one project only)")
    p.set_defaults(func=cmd_export)

    from . import bench, contract, doctor, environment, launch, patch_coverage, synth, testing
    environment.register(sub)
    doctor.register(sub)
    synth.register(sub)
    contract.register(sub)
    testing.register(sub)
    launch.register(sub)
    patch_coverage.register(sub)
    bench.register(sub)
    from .results import gate, summary
    summary.register(sub)
    gate.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status(lambda: args.func(args))
