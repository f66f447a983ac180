"""The patch queues: one concern per patch, each saying what and why, applied in the order of its `series`.

    patches/<project>/series        the patches' file names, one per line, in the order they apply
    patches/<project>/<name>.patch  a DEP-3 header (Description, Origin, Author, Forwarded, Kit-Files,
                                    Last-Update), a `---` line, then the diff of upstream files
    port/<project>/<path>           the files the kit wrote, at the paths they take upstream; each is
                                    named by the Kit-Files field of the one patch it belongs to

This module reads and checks those files; patchqueue.py turns them into git commits and back.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KitError
from .patchfile import parse_patch, read_patch_text
from .pins import KIT_ROOT, Project

SERIES_FILE = "series"
REQUIRED_FIELDS = ("Description", "Origin", "Author", "Forwarded", "Last-Update")
# The order fields are written in; others (DEP-3 allows more) follow in the order found.
FIELD_ORDER = ("Description", "Origin", "Author", "Forwarded", "Kit-Files", "Last-Update")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
HEADER_END = "---"
SKIPPED_PORT_PARTS = ("__pycache__",)
SKIPPED_PORT_SUFFIXES = (".pyc", ".pyo")


@dataclass
class QueuedPatch:
    """One patch of a queue: its DEP-3 fields and its diff (of upstream files only)."""

    name: str
    path: Path
    fields: dict[str, str] = field(default_factory=dict)  # continuation lines joined by "\n"
    diff: str = ""

    @property
    def summary(self) -> str:
        return self.fields.get("Description", "").split("\n")[0]

    @property
    def kit_files(self) -> list[str]:
        return self.fields.get("Kit-Files", "").split()

    @property
    def touched(self) -> list[str]:
        return [c.path for c in parse_patch(self.diff, source=self.path.name)] if self.diff else []

    def text(self) -> str:
        return format_header(self.fields) + self.diff


def parse_fields(lines: list[str], source: str) -> dict[str, str]:
    """RFC 822-style fields (DEP-3): `Key: value`, continuation lines indented, ` .` an empty line."""
    fields: dict[str, str] = {}
    last = None
    for number, line in enumerate(lines):
        stripped = line.rstrip("\n")
        if stripped.startswith(" ") and last is not None:
            value = stripped[1:]
            fields[last] += "\n" + ("" if value == "." else value)
        elif ":" in stripped and not stripped.startswith((" ", "diff --git")):
            last, _, value = stripped.partition(":")
            fields[last] = value.strip()
        else:
            raise KitError(f"{source}:{number + 1}: expected a DEP-3 field (`Key: value`, or an indented "
                           f"continuation line), found {stripped[:60]!r}. Fix: write the header as DEP-3 fields")
    return fields


def parse_header(text: str, source: str) -> tuple[dict[str, str], str]:
    """(fields, diff) of a queued patch: DEP-3 fields up to a `---` line, then the diff."""
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if line.rstrip("\n") == HEADER_END:
            return parse_fields(lines[:number], source), "".join(lines[number + 1:])
    raise KitError(f"{source}: no `---` line ends the DEP-3 header. Fix: end the header with a line `---`")


def format_fields(fields: dict[str, str]) -> str:
    """The fields as DEP-3 text, in FIELD_ORDER, each line ending in a newline."""
    order = [k for k in FIELD_ORDER if k in fields] + [k for k in fields if k not in FIELD_ORDER]
    lines = []
    for key in order:
        first, *rest = fields[key].split("\n")
        lines.append(f"{key}: {first}".rstrip())
        lines += [f" {line}" if line.strip() else " ." for line in rest]
    return "\n".join(lines) + "\n"


def format_header(fields: dict[str, str]) -> str:
    return format_fields(fields) + f"{HEADER_END}\n"


def read_patch_file(path: Path) -> QueuedPatch:
    fields, diff = parse_header(read_patch_text(path), path.name)
    return QueuedPatch(path.name[: -len(".patch")], path, fields, diff)


def series_names(project: Project) -> list[str]:
    series = project.queue_dir / SERIES_FILE
    if not series.is_file():
        raise KitError(f"{series} is missing: the kit checkout is incomplete (`git status` in the kit root)")
    return [line.split("#")[0].strip() for line in series.read_text().splitlines() if line.split("#")[0].strip()]


def read_queue(project: Project) -> list[QueuedPatch]:
    """The project's patches in series order."""
    queue = []
    for name in series_names(project):
        path = project.queue_dir / name
        if not path.is_file():
            raise KitError(f"{project.queue_dir / SERIES_FILE} names {name}, which does not exist")
        queue.append(read_patch_file(path))
    return queue


def port_files(project: Project) -> list[str]:
    """The files the kit wrote for this project, relative to the upstream root, sorted."""
    root = project.port_dir
    if not root.is_dir():
        return []
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not set(rel.parts) & set(SKIPPED_PORT_PARTS) and path.suffix not in SKIPPED_PORT_SUFFIXES:
            found.append(rel.as_posix())
    return sorted(found)


def check_queue(project: Project) -> list[str]:
    """What is wrong with a queue: unknown or unlisted patches, missing fields, unclaimed port files."""
    problems = []
    try:
        queue = read_queue(project)
    except KitError as exc:
        return [str(exc)]
    listed = {p.path.name for p in queue}
    for extra in sorted(p.name for p in project.queue_dir.glob("*.patch") if p.name not in listed):
        problems.append(f"{project.queue_dir / extra} is not in {SERIES_FILE}")
    claims: dict[str, list[str]] = {}
    for patch in queue:
        for key in REQUIRED_FIELDS:
            if not patch.fields.get(key):
                problems.append(f"{patch.path}: no {key} field (DEP-3)")
        if patch.fields.get("Last-Update") and not DATE.match(patch.fields["Last-Update"]):
            problems.append(f"{patch.path}: Last-Update is not YYYY-MM-DD")
        for rel in patch.kit_files:
            claims.setdefault(rel, []).append(patch.name)
        if not patch.diff.strip() and not patch.kit_files:
            problems.append(f"{patch.path}: changes nothing (no diff, no Kit-Files)")
    files = set(port_files(project))
    for rel in sorted(files - set(claims)):
        problems.append(f"port/{project.name}/{rel} is named by no patch's Kit-Files")
    for rel, owners in sorted(claims.items()):
        if rel not in files:
            problems.append(f"{', '.join(owners)}: Kit-Files names {rel}, which is not in port/{project.name}/")
        if len(owners) > 1:
            problems.append(f"{rel} is claimed by {', '.join(owners)}: a file belongs to one patch")
        for patch in queue:
            if rel in patch.touched:
                problems.append(f"{patch.name}: diffs {rel}, which is a port file (edit port/{project.name}/{rel})")
    return problems


ROOT_HEADER = """\
# {patch}: {what} ({pin}),
# built by `python3 tools/kit.py export {project}` from {queue}/series ({count} patches){port}.
# Do not edit by hand (README, "Maintaining the patches"). The changes, in the order they apply;
# each patch's header in {queue}/ says why:
{listing}
"""


def root_header(project: Project, queue: list[QueuedPatch], ported: list[str]) -> str:
    """The comment that opens a root patch: what it is, what built it, the queue with each summary."""
    width = max((len(p.name) for p in queue), default=0)
    listing = "\n".join(f"#   {p.name:{width}s}  {p.summary}" for p in queue)
    port = f" and port/{project.name}/ ({len(ported)} files the kit wrote)" if ported else ""
    what = "the FlashOCC port" if project.name == "flashocc" else f"the kit's changes to {project.name}"
    return ROOT_HEADER.format(patch=project.patch_file.name, what=what, pin=project.describe_pin(),
                              project=project.name, queue=os.path.relpath(project.queue_dir, KIT_ROOT),
                              count=len(queue), port=port, listing=listing)


