"""The patch queues: one concern per patch, each saying what and why, applied in the order of its `series`.

    patches/<project>/series        the patches' file names, one per line, in the order they apply
    patches/<project>/<name>.patch  a DEP-3 header (Description, Origin, Forwarded, Kit-Files,
                                    Last-Update), a `---` line, then the diff of upstream files
    port/<project>/<path>           the files the kit wrote, at the paths they take upstream; each is
                                    named by the Kit-Files field of the one patch it belongs to

The root patch (flashocc.patch, ...) is built from them: the queue applied in order to the pin in a
throwaway index, the port's files added, one diff against the pin. Building never touches a work
tree, and the same queue and port always give the same bytes.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import gitutil
from .errors import KitError
from .patchfile import parse_patch, read_patch_text
from .pins import KIT_ROOT, Project

SERIES_FILE = "series"
REQUIRED_FIELDS = ("Description", "Origin", "Forwarded")
# The order fields are written in; others (DEP-3 allows more) follow in the order found.
FIELD_ORDER = ("Description", "Origin", "Forwarded", "Kit-Files", "Last-Update")
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


def parse_header(text: str, source: str) -> tuple:
    """(fields, diff) of a queued patch: RFC 822-style fields up to a `---` line, then the diff."""
    fields: dict[str, str] = {}
    lines = text.splitlines(keepends=True)
    last = None
    for number, line in enumerate(lines):
        stripped = line.rstrip("\n")
        if stripped == HEADER_END:
            return fields, "".join(lines[number + 1:])
        if stripped.startswith(" ") and last is not None:
            value = stripped[1:]
            fields[last] += "\n" + ("" if value == "." else value)
        elif ":" in stripped and not stripped.startswith("diff --git"):
            last, _, value = stripped.partition(":")
            fields[last] = value.strip()
        else:
            raise KitError(f"{source}:{number + 1}: expected a DEP-3 field or the `---` line before the diff, "
                           f"found {stripped[:60]!r}")
    raise KitError(f"{source}: no `---` line ends the DEP-3 header")


def format_header(fields: dict[str, str]) -> str:
    order = [k for k in FIELD_ORDER if k in fields] + [k for k in fields if k not in FIELD_ORDER]
    lines = []
    for key in order:
        first, *rest = fields[key].split("\n")
        lines.append(f"{key}: {first}".rstrip())
        lines += [f" {line}" if line.strip() else " ." for line in rest]
    return "\n".join(lines) + f"\n{HEADER_END}\n"


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


def add_patch(project: Project, name: str, description: str, origin: str = "vendor",
              forwarded: str = "no") -> QueuedPatch:
    """Append a new, still empty patch to the queue: `kit.py export --into NAME` fills it from a checkout."""
    if not name or "/" in name or name.startswith(".") or name.endswith(".patch"):
        raise KitError(f"patch name {name!r}: give a short file-name stem, e.g. test-metrics-json")
    names = series_names(project)
    path = project.queue_dir / f"{name}.patch"
    if path.name in names or path.exists():
        raise KitError(f"{path} exists already")
    if not description.strip():
        raise KitError("--description: say what the change is and why (its first line is its summary)")
    patch = QueuedPatch(name, path, {"Description": description.strip(), "Origin": origin, "Forwarded": forwarded})
    path.write_text(patch.text(), encoding="utf-8")
    (project.queue_dir / SERIES_FILE).write_text("\n".join([*names, path.name]) + "\n")
    return patch


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


# ---- building: the queue and the port, in a throwaway index of a checkout that has the pin ------------------


@contextmanager
def scratch_index(repo: Path, tree: str) -> Iterator[dict[str, str]]:
    """An environment whose git index is a temporary copy of `tree` (the work tree is never touched)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        gitutil.git(repo, "read-tree", tree, env=env)
        yield env


def _apply_cached(repo: Path, patch: QueuedPatch, env: dict[str, str], *flags: str) -> None:
    if not patch.diff.strip():
        return
    with tempfile.NamedTemporaryFile("w", suffix=".patch", delete=False, encoding="utf-8",
                                     errors="surrogateescape") as fh:
        fh.write(patch.diff)
    try:
        proc = gitutil.git(repo, "apply", "--cached", *flags, fh.name, env=env, check=False)
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        raise KitError(f"{patch.path} does not apply after the patches before it in the series:\n"
                       f"{proc.stderr.strip()}")


def _add_file(repo: Path, env: dict[str, str], rel: str, source: Path) -> None:
    blob = gitutil.git(repo, "hash-object", "-w", "--no-filters", str(source)).stdout.strip()
    mode = "100755" if os.access(source, os.X_OK) else "100644"
    gitutil.git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}", env=env)


def build_tree(project: Project, repo: Path, base: str, upto: int | None = None) -> str:
    """Tree id of the pin with the queue (its first `upto` patches) and, for a full build, the port files."""
    queue = read_queue(project)
    with scratch_index(repo, base) as env:
        for patch in queue[:upto]:
            _apply_cached(repo, patch, env)
        if upto is None:
            for rel in port_files(project):
                _add_file(repo, env, rel, project.port_dir / rel)
        return gitutil.git(repo, "write-tree", "--missing-ok", env=env).stdout.strip()


def normalized_queue(project: Project, repo: Path, base: str) -> list[QueuedPatch]:
    """The queue with each patch's diff regenerated from the trees before and after it: current blob ids and
    context everywhere, in the kit's diff form. Equal to the files on disk when the queue is normalized."""
    queue = read_queue(project)
    port = set(port_files(project))
    normalized = []
    with scratch_index(repo, base) as env:
        before = base
        for patch in queue:
            _apply_cached(repo, patch, env)
            after = gitutil.git(repo, "write-tree", "--missing-ok", env=env).stdout.strip()
            paths = [p for p in changed_paths(repo, before, after) if p not in port]
            diff = diff_trees(repo, before, after, paths) if paths else ""
            normalized.append(QueuedPatch(patch.name, patch.path, dict(patch.fields), diff))
            before = after
    return normalized


def stale_patches(project: Project, repo: Path, base: str) -> list[QueuedPatch]:
    """Queued patches whose file is not in normalized form (the ones `normalized_queue` would rewrite)."""
    return [p for p in normalized_queue(project, repo, base)
            if p.path.read_bytes() != p.text().encode("utf-8", "surrogateescape")]


def diff_trees(repo: Path, old: str, new: str, paths: list[str] | None = None) -> str:
    return gitutil.git(repo, "diff", *gitutil.DIFF_OPTIONS, old, new, "--", *(paths or [])).stdout


ROOT_HEADER = """\
# {patch}: {what} ({pin}),
# built by `python3 tools/kit.py export {project}` from {queue}/series ({count} patches){port}.
# Do not edit by hand (README, "Maintaining the patches"). The changes, in the order they apply;
# each patch's header in {queue}/ says why:
{listing}
"""


def root_header(project: Project, queue: list[QueuedPatch]) -> str:
    width = max((len(p.name) for p in queue), default=0)
    listing = "\n".join(f"#   {p.name:{width}s}  {p.summary}" for p in queue)
    ported = port_files(project)
    port = f" and port/{project.name}/ ({len(ported)} files the kit wrote)" if ported else ""
    what = "the FlashOCC port" if project.name == "flashocc" else f"the kit's changes to {project.name}"
    return ROOT_HEADER.format(patch=project.patch_file.name, what=what, pin=project.describe_pin(),
                              project=project.name, queue=os.path.relpath(project.queue_dir, KIT_ROOT),
                              count=len(queue), port=port, listing=listing)


def build_root_patch(project: Project, repo: Path, base: str) -> str:
    """The root patch's text: header, then the pin -> (queue + port) diff, as `git apply` takes it."""
    # an empty patch (just added with `series --add`, not yet filled by `export --into`) builds to nothing
    problems = [p for p in check_queue(project) if not p.endswith("changes nothing (no diff, no Kit-Files)")]
    if problems:
        raise KitError(f"{project.name}: the patch queue is inconsistent:\n  " + "\n  ".join(problems))
    diff = diff_trees(repo, base, build_tree(project, repo, base))
    return root_header(project, read_queue(project)) + diff if diff else ""


def tree_of_patch(repo: Path, base: str, patch_file: Path) -> str:
    """Tree id of the pin with a root patch applied (what a checkout holds after `kit.py apply`)."""
    with scratch_index(repo, base) as env:
        proc = gitutil.git(repo, "apply", "--cached", str(patch_file), env=env, check=False)
        if proc.returncode != 0:
            raise KitError(f"{patch_file.name} does not apply to the pin:\n{proc.stderr.strip()}")
        return gitutil.git(repo, "write-tree", "--missing-ok", env=env).stdout.strip()


def worktree_tree(repo: Path, base: str) -> str:
    """Tree id of a checkout's files as they are (new files included, ignored ones left out)."""
    with scratch_index(repo, base) as env:
        real_index = Path(gitutil.git(repo, "rev-parse", "--absolute-git-dir").stdout.strip()) / "index"
        if real_index.exists():  # keeps the skip-worktree (sparse) bits
            Path(env["GIT_INDEX_FILE"]).write_bytes(real_index.read_bytes())
        gitutil.git(repo, "add", "-A", "--", ".", env=env)
        return gitutil.git(repo, "write-tree", "--missing-ok", env=env).stdout.strip()


def changed_paths(repo: Path, old: str, new: str) -> dict[str, str]:
    """path -> status letter (A, M, D) between two trees."""
    out = gitutil.git(repo, "diff", "--no-renames", "--name-status", "-z", old, new).stdout.split("\0")
    return {out[i + 1]: out[i] for i in range(0, len(out) - 1, 2)}


def blob_at(repo: Path, tree: str, rel: str) -> str | None:
    proc = gitutil.git(repo, "rev-parse", "--verify", "-q", f"{tree}:{rel}", check=False)
    return proc.stdout.strip() or None


def read_blob(repo: Path, blob: str) -> bytes:
    return gitutil.git_bytes(repo, "cat-file", "blob", blob)
