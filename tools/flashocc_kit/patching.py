"""Applying and checking the kit's root patches, atomically and verifiably.

Every patch is checked against the blob ids on its `index` lines before `git apply` runs, so a
file edited locally or taken from another revision is named precisely, and nothing is written
unless the whole patch fits. Nothing here ever uses `--reject`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from . import gitutil
from .errors import KitError
from .patchfile import FileChange, read_patch


class PatchState(str, Enum):
    PRISTINE = "pristine"  # every touched file is the upstream pre-image
    APPLIED = "applied"  # every touched file is the patched post-image
    CONFLICT = "conflict"  # anything else: local edits, another revision, half-applied
    MISSING = "missing"  # the checkout is not there


@dataclass
class FileCheck:
    change: FileChange
    actual: str | None  # blob id on disk, None if absent

    @staticmethod
    def _matches(actual: str | None, expected: str | None) -> bool:
        if expected is None:
            return actual is None
        return actual is not None and actual.startswith(expected)

    @property
    def is_pre(self) -> bool:
        return self._matches(self.actual, self.change.old_blob)

    @property
    def is_post(self) -> bool:
        return self._matches(self.actual, self.change.new_blob)

    def describe(self) -> str:
        expected_pre = self.change.old_blob or "absent"
        expected_post = self.change.new_blob or "absent"
        found = self.actual or "absent"
        return (f"{self.change.path}: found {found[:12]}, expected the upstream pre-image "
                f"{expected_pre[:12]} or the patched post-image {expected_post[:12]}")


def check_files(project_dir: Path, changes: list[FileChange]) -> list[FileCheck]:
    checks = []
    for change in changes:
        # A file the patch creates is looked for at its new path, others at their old path.
        rel = change.old_path or change.new_path
        assert rel is not None
        checks.append(FileCheck(change, gitutil.file_blob_id(project_dir / rel)))
    return checks


def patch_state(project_dir: Path, patch_file: Path) -> tuple[PatchState, list[FileCheck]]:
    if not project_dir.is_dir():
        return PatchState.MISSING, []
    checks = check_files(project_dir, read_patch(patch_file))
    if not checks:  # an empty patch is trivially applied
        return PatchState.APPLIED, checks
    if all(c.is_pre for c in checks):
        return PatchState.PRISTINE, checks
    if all(c.is_post for c in checks):
        return PatchState.APPLIED, checks
    return PatchState.CONFLICT, checks


def _git_apply(project_dir: Path, patch_file: Path, *flags: str) -> tuple[bool, str]:
    env = None if gitutil.is_git_toplevel(project_dir) else gitutil.outside_repo_env(project_dir)
    proc = gitutil.git(project_dir, "apply", *flags, str(patch_file.resolve()), check=False, env=env)
    return proc.returncode == 0, proc.stderr.strip()


_FAILED_AT = re.compile(r"patch failed: (.+):(\d+)")


def explain_apply_failure(stderr: str, changes: list[FileChange]) -> str:
    """Turn git's "patch failed: FILE:LINE" into the file and the hunk header that did not fit."""
    lines = []
    by_path = {c.path: c for c in changes}
    for path, old_line in _FAILED_AT.findall(stderr):
        change = by_path.get(path)
        hunk = change.hunk_at(int(old_line)) if change else None
        lines.append(f"  {path}: hunk {hunk or f'at line {old_line}'} does not fit")
    return "\n".join(lines) or stderr


@dataclass
class ApplyResult:
    project: str
    outcome: str  # "applied" | "already applied"


def apply_patch(project: str, project_dir: Path, patch_file: Path) -> ApplyResult:
    """Apply patch_file to project_dir completely or not at all."""
    if not project_dir.is_dir():
        raise KitError(f"{project}: no checkout at {project_dir}. Fix: run `python3 tools/kit.py sources`.")
    changes = read_patch(patch_file)
    if not changes:
        return ApplyResult(project, "nothing to apply")
    state, checks = patch_state(project_dir, patch_file)
    if state is PatchState.APPLIED:
        ok, err = _git_apply(project_dir, patch_file, "--check", "--reverse")
        if not ok:
            raise KitError(f"{project}: files look patched but `git apply --reverse --check` fails:\n{err}")
        return ApplyResult(project, "already applied")
    if state is PatchState.CONFLICT:
        bad = [c.describe() for c in checks if not c.is_pre]
        raise KitError(
            f"{project}: {patch_file.name} does not fit {project_dir}; nothing was changed.\n"
            + "\n".join(f"  {line}" for line in bad)
            + f"\nFix: restore those files to the pinned upstream (for a git checkout: "
            f"`git -C {project_dir} checkout -- <file>`), or re-create the checkout with "
            f"`python3 tools/kit.py sources`.")
    ok, err = _git_apply(project_dir, patch_file, "--check")
    if not ok:
        raise KitError(f"{project}: {patch_file.name} does not apply to {project_dir}; nothing was changed.\n"
                       + explain_apply_failure(err, changes))
    ok, err = _git_apply(project_dir, patch_file)
    if not ok:  # git apply is atomic: a failure here has written nothing
        raise KitError(f"{project}: `git apply` failed; nothing was changed.\n{err}")
    state, checks = patch_state(project_dir, patch_file)
    if state is not PatchState.APPLIED:
        _git_apply(project_dir, patch_file, "--reverse")
        raise KitError(f"{project}: after applying, these files do not match the patch's post-image "
                       "(reverted):\n" + "\n".join(c.describe() for c in checks if not c.is_post))
    return ApplyResult(project, "applied")


def revert_patch(project: str, project_dir: Path, patch_file: Path) -> str:
    """Undo an applied patch (the inverse of apply_patch, equally atomic)."""
    state, checks = patch_state(project_dir, patch_file)
    if state is PatchState.PRISTINE:
        return "already pristine"
    if state is not PatchState.APPLIED:
        raise KitError(f"{project}: cannot revert, the patched files were edited:\n"
                       + "\n".join(c.describe() for c in checks if not c.is_post))
    ok, err = _git_apply(project_dir, patch_file, "--reverse")
    if not ok:
        raise KitError(f"{project}: `git apply --reverse` failed; nothing was changed.\n{err}")
    return "reverted"
