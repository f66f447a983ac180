"""`kit.py export`: a maintainer's edits in a patched checkout go back into the queue and the port,
then the root patch is rebuilt from them (series.build_root_patch).

Where an edit lands:
- a file the kit wrote (port/<project>/<path>): that file;
- a new file: port/<project>/<path>, claimed by the patch named with --into;
- an upstream file: the patch named with --into, else the last patch of the series that changes
  that file. Later patches that change the same file keep their changes: they are taken back out
  of the edited file, the edit goes into the chosen patch, and they are laid on top again.

Edits made to port/ or to a queued patch directly (not in the checkout) are written into the
checkout, where its files are still as the previous root patch left them. Nothing is written
unless the rebuilt queue reproduces the checkout exactly.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import gitutil, series
from .errors import KitError
from .patchfile import read_patch_text
from .patching import PatchState, applied_elsewhere, patch_state, record_applied
from .pins import Project
from .series import QueuedPatch


@dataclass
class ExportResult:
    patch_written: bool
    pulled: dict[str, str] = field(default_factory=dict)  # path -> where the checkout's edit went
    pushed: list[str] = field(default_factory=list)  # checkout files updated from port/ or the queue

    def lines(self) -> list[str]:
        out = [f"  {path}: edit -> {where}" for path, where in sorted(self.pulled.items())]
        out += [f"  {path}: checkout updated from the queue/port" for path in self.pushed]
        return out


def _later_touching(queue: list[QueuedPatch], index: int, rel: str) -> list[QueuedPatch]:
    return [p for p in queue[index + 1:] if rel in p.touched]


def _owner(queue: list[QueuedPatch], rel: str, into: str | None) -> int:
    names = [p.name for p in queue]
    if into is not None:
        if into not in names:
            raise KitError(f"--into {into}: no such patch in the series ({', '.join(names)})")
        return names.index(into)
    owners = [i for i, p in enumerate(queue) if rel in p.touched]
    if not owners:
        raise KitError(f"{rel} is edited in the checkout, but no patch of the series changes it: say which patch "
                       f"the change belongs to with --into NAME (`kit.py series` lists them)")
    return owners[-1]


def _without_later_changes(repo: Path, checkout_tree: str, rel: str, later: list[QueuedPatch]) -> str | None:
    """Blob of rel in the checkout with the later patches' changes to it reverse-applied, last first."""
    with series.scratch_index(repo, checkout_tree) as env:
        for patch in reversed(later):
            with tempfile.NamedTemporaryFile("w", suffix=".patch", delete=False, encoding="utf-8",
                                             errors="surrogateescape") as fh:
                fh.write(patch.diff)
            try:
                proc = gitutil.git(repo, "apply", "--cached", "--reverse", f"--include={rel}", fh.name,
                                   env=env, check=False)
            finally:
                os.unlink(fh.name)
            if proc.returncode != 0:
                raise KitError(f"{rel}: the edit overlaps what the later patch {patch.name} changes, so it cannot "
                               f"go into an earlier one. Put it in {patch.name} (--into {patch.name}), or make "
                               f"the two changes apart.\n{proc.stderr.strip()}")
        return series.blob_at(repo, gitutil.git(repo, "write-tree", "--missing-ok", env=env).stdout.strip(), rel)


def _rewrite_patch(repo: Path, project: Project, queue: list[QueuedPatch], index: int, base: str,
                   new_blobs: dict[str, str | None], port: set) -> QueuedPatch:
    """Patch `index` with the given files set to new contents (None: deleted) after it applies."""
    before = series.build_tree(project, repo, base, upto=index)
    patch = queue[index]
    with series.scratch_index(repo, before) as env:
        series._apply_cached(repo, patch, env)  # noqa: SLF001 (the same module family)
        for rel, blob in new_blobs.items():
            if blob is None:
                gitutil.git(repo, "update-index", "--force-remove", "--", rel, env=env)
            else:
                listed = gitutil.git(repo, "ls-files", "-s", "--", rel, env=env).stdout.split()
                mode = listed[0] if listed else "100644"
                gitutil.git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}", env=env)
        after = gitutil.git(repo, "write-tree", "--missing-ok", env=env).stdout.strip()
    upstream_paths = [p for p in series.changed_paths(repo, before, after) if p not in port]
    diff = series.diff_trees(repo, before, after, upstream_paths) if upstream_paths else ""
    return QueuedPatch(patch.name, patch.path, dict(patch.fields), diff)


def stale_files(project: Project, repo: Path, base: str) -> list[Path]:
    """The committed files `export` would rewrite: queued patches not in normalized form, a stale root patch."""
    stale = [p.path for p in series.stale_patches(project, repo, base)]
    previous = read_patch_text(project.patch_file) if project.patch_file.exists() else ""
    if series.build_root_patch(project, repo, base) != previous:
        stale.append(project.patch_file)
    return stale


def _write_root_patch(project: Project, repo: Path, base: str, previous: str) -> bool:
    for patch in series.stale_patches(project, repo, base):
        patch.path.write_text(patch.text(), encoding="utf-8", errors="surrogateescape")
    text = series.build_root_patch(project, repo, base)
    if text == previous:
        return False
    project.patch_file.write_text(text, encoding="utf-8", errors="surrogateescape")
    return True


def _port_edit(project: Project, queue: list[QueuedPatch], checkout: Path, rel: str, status: str, known: bool,
               into: str | None) -> str:
    """Copy (or remove) a file the kit wrote from the checkout into port/; a new one joins --into's Kit-Files."""
    destination = project.port_dir / rel
    if status == "D":
        destination.unlink()
        for patch in queue:
            if rel in patch.kit_files:
                patch.fields["Kit-Files"] = "\n".join(f for f in patch.kit_files if f != rel)
        return "removed from port/"
    if not known:
        if into is None:
            raise KitError(f"{rel} is a new file in the checkout: say which patch it belongs to with --into NAME "
                           "(it becomes a file of port/, named in that patch's Kit-Files)")
        owner = queue[_owner(queue, rel, into)]
        owner.fields["Kit-Files"] = "\n".join([*owner.kit_files, rel])
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes((checkout / rel).read_bytes())
    return f"port/{project.name}/{rel}"


def export_project(project: Project, checkout: Path, base: str, into: str | None = None) -> ExportResult:
    """Pull the checkout's edits into the queue and port, rebuild the root patch, bring the checkout up to date."""
    repo = checkout
    previous = read_patch_text(project.patch_file) if project.patch_file.exists() else ""
    result = ExportResult(patch_written=False)
    if not previous or patch_state(checkout, project.patch_file)[0] is PatchState.PRISTINE:
        # nothing of the kit is in the checkout to pull back: build only
        result.patch_written = _write_root_patch(project, repo, base, previous)
        return result
    stale = applied_elsewhere(checkout, project.patch_file)
    if stale:
        raise KitError(f"{project.name}: {checkout} holds {stale}, not the current {project.patch_file.name}, so "
                       "its differences are not all edits. Fix: take your edits aside, re-create the checkout "
                       "(`python3 tools/kit.py sources` after moving it away) and edit again.")
    applied_tree = series.tree_of_patch(repo, base, project.patch_file)  # what the checkout was given
    checkout_tree = series.worktree_tree(repo, base)
    edits = series.changed_paths(repo, applied_tree, checkout_tree)
    queue = series.read_queue(project)
    port = set(series.port_files(project))
    targets: dict[int, dict[str, str | None]] = {}
    originals = {p.path: p.path.read_bytes() for p in queue}
    originals[project.patch_file] = project.patch_file.read_bytes()
    originals.update({project.port_dir / rel: (project.port_dir / rel).read_bytes() for rel in port})
    try:
        for rel, status in sorted(edits.items()):
            if rel in port or series.blob_at(repo, base, rel) is None:
                result.pulled[rel] = _port_edit(project, queue, checkout, rel, status, rel in port, into)
                continue
            index = _owner(queue, rel, into)
            later = _later_touching(queue, index, rel)
            blob = None if status == "D" else series.blob_at(repo, checkout_tree, rel)
            if later and blob is not None:
                blob = _without_later_changes(repo, checkout_tree, rel, later)
            targets.setdefault(index, {})[rel] = blob
            result.pulled[rel] = f"{queue[index].name}.patch"
        for index in sorted(targets):
            queue[index] = _rewrite_patch(repo, project, queue, index, base, targets[index], port)
        for patch in queue:
            if patch.path.read_bytes() != patch.text().encode("utf-8", "surrogateescape"):
                patch.path.write_text(patch.text(), encoding="utf-8", errors="surrogateescape")
        rebuilt = series.build_tree(project, repo, base)
        mismatch = sorted(p for p in series.changed_paths(repo, rebuilt, checkout_tree) if p in edits)
        if mismatch:
            raise KitError("the rebuilt queue does not reproduce the checkout's edits of " + ", ".join(mismatch)
                           + ": nothing was written. Split the edit, or choose the patch with --into.")
        result.patch_written = _write_root_patch(project, repo, base, previous)
    except BaseException:  # all or nothing: the queue, the port and the root patch as they were
        for path, data in originals.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for rel in set(series.port_files(project)) - port:
            (project.port_dir / rel).unlink()
        raise
    for rel in sorted(series.changed_paths(repo, rebuilt, checkout_tree)):
        target = checkout / rel
        blob = series.blob_at(repo, rebuilt, rel)
        if blob is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(series.read_blob(repo, blob))
        result.pushed.append(rel)
    record_applied(checkout, project.patch_file)
    return result
