"""Putting each upstream project at its pin into the workspace, and recognising it there later.

A checkout is taken from a directory of pristine checkouts (air-gapped sites; copied as is,
.git included) or fetched from its repository (shallow: only the pinned revision). mmdetection
falls back to its byte-identical PyPI sdist. A copy without .git (an sdist) gets a one-commit
repository so that it can be patched, exported and recognised like the others.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from . import gitutil
from .errors import KitError, SourcesUnavailable
from .patching import PatchState, patch_state
from .patchqueue import QUEUE_BRANCH, on_queue_branch, read_record
from .pins import Project
from .pypi import download_sdist, unpack_sdist

# Paths that setup creates in a checkout (build output, the launch-script link); kept out of
# `git status` and of exports through .git/info/exclude. The sdist copies have no .gitignore.
LOCAL_ONLY_PATHS = ("*.egg-info/", "__pycache__/", "*.py[cod]", "/build/", "*.so")
FLASHOCC_LOCAL_ONLY_PATHS = ("/test",)

SDIST_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "flashocc-kit", "GIT_AUTHOR_EMAIL": "flashocc-kit@localhost",
    "GIT_COMMITTER_NAME": "flashocc-kit", "GIT_COMMITTER_EMAIL": "flashocc-kit@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}


@dataclass
class PinCheck:
    ok: bool | None  # None: cannot tell (plain directory of a project pinned by commit)
    revision: str  # what is there, for humans
    base_commit: str | None = None  # the commit patches are exported against


def check_pin(project: Project, path: Path) -> PinCheck:
    """Is the checkout at path the pinned upstream revision?"""
    if not path.exists():
        return PinCheck(False, "missing")
    if not gitutil.is_git_toplevel(path):
        if project.sdist_tree:
            tree = gitutil.content_tree_id(path)
            if tree == project.sdist_tree:
                return PinCheck(True, f"plain directory = {project.sdist}")
        return PinCheck(None, "plain directory (verified by blob ids only)")
    record = read_record(path) if on_queue_branch(path) else None
    head = record.base if record else gitutil.head_commit(path)
    if head is None:
        return PinCheck(False, "git repository without commits")
    queued = f" + {QUEUE_BRANCH}" if record else ""
    if project.commit:
        return PinCheck(head == project.commit, head[:12] + queued, project.commit if head == project.commit else None)
    tag_commit = gitutil.resolve_commit(path, f"refs/tags/{project.ref}")
    if tag_commit == head:
        return PinCheck(True, f"{project.ref} ({head[:12]}){queued}", head)
    tree = gitutil.git(path, "rev-parse", f"{head}^{{tree}}").stdout.strip()
    if project.sdist_tree and tree == project.sdist_tree:
        return PinCheck(True, f"{project.sdist} ({head[:12]}){queued}", head)
    return PinCheck(False, head[:12])


def foreign_changes(project: Project, path: Path) -> list[str]:
    """Local changes in a git checkout that are not the kit's own patch."""
    changed = gitutil.changed_paths(path)
    if not changed:
        return []
    state, checks = patch_state(path, project.patch_file) if project.patch_file.exists() else (None, [])
    patched = {c.change.path for c in checks} | {c.change.old_path for c in checks if c.change.old_path}
    if state is PatchState.APPLIED:
        return [p for p in changed if p not in patched]
    return changed


def verify_existing(project: Project, path: Path) -> PinCheck:
    """Accept a checkout at its pin whose only changes are the kit's patch; refuse anything else."""
    pin = check_pin(project, path)
    if pin.ok is False:
        raise KitError(
            f"{project.name}: {path} is at {pin.revision}, not the pin {project.describe_pin()}.\n"
            f"Fix: move it away (`mv {path} {path}.old`) and run `python3 tools/kit.py sources` again, "
            f"or check out the pin yourself.")
    if gitutil.is_git_toplevel(path):
        foreign = foreign_changes(project, path)
        if foreign:
            shown = "\n".join(f"  {p}" for p in foreign[:20])
            more = f"\n  ... and {len(foreign) - 20} more" if len(foreign) > 20 else ""
            raise KitError(
                f"{project.name}: {path} has local changes that are not {project.patch}:\n{shown}{more}\n"
                f"Fix: keep them with `git -C {path} stash -u` (or commit them elsewhere); changes meant for the "
                f"kit go into port/ or the patch queue (README, \"Maintaining the patches\").")
    return pin


def _copy_checkout(src: Path, dest: Path, skip_nested: tuple[str, ...]) -> None:
    def ignore(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(directory) == src and n in skip_nested]

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".kit-partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, symlinks=True, ignore=ignore)
    tmp.rename(dest)


def _clone_pinned(project: Project, dest: Path) -> None:
    """Fetch only the pinned revision: shallow when the server allows it, else blob-less."""
    tmp = dest.with_name(dest.name + ".kit-partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        gitutil.git(tmp, "init", "-q")
        gitutil.git(tmp, "remote", "add", "origin", project.repo)
        want = project.commit or f"refs/tags/{project.ref}:refs/tags/{project.ref}"
        shallow = gitutil.git(tmp, "fetch", "-q", "--depth", "1", "origin", want, check=False)
        if shallow.returncode != 0:
            gitutil.git(tmp, "fetch", "-q", "--filter=blob:none", "origin",
                        project.ref if project.commit else want)
        target = project.commit or f"refs/tags/{project.ref}"
        gitutil.git(tmp, "checkout", "-q", "--detach", target)
    except KitError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(dest)


def _commit_plain_copy(project: Project, dest: Path) -> None:
    """Give an sdist copy a single, reproducible commit, so it can be exported and recognised."""
    gitutil.git(dest, "init", "-q")
    gitutil.git(dest, "add", "-A")
    gitutil.git(dest, "commit", "-q", "--no-verify", "-m",
                f"pristine {project.sdist or project.ref} (no upstream .git)", env=SDIST_COMMIT_ENV)


def _find_in_sources_dir(project: Project, sources_dir: Path) -> Path | None:
    for rel in (Path(project.path).name, project.path):
        candidate = sources_dir / rel
        if candidate.is_dir():
            return candidate
    return None


def exclude_local_paths(checkout: Path, flashocc: bool = False) -> None:
    """Keep what setup creates in a checkout out of `git status` and of exports."""
    if not gitutil.is_git_toplevel(checkout):
        return
    exclude = checkout / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    wanted = LOCAL_ONLY_PATHS + (FLASHOCC_LOCAL_ONLY_PATHS if flashocc else ())
    missing = [p for p in wanted if p not in lines]
    if missing:
        exclude.write_text("\n".join([*lines, "# added by flashocc-kit", *missing]) + "\n")


def obtain(project: Project, workspace: Path, sources_dir: Path | None, log=print) -> PinCheck:
    """Make sure project sits at its pin in the workspace; returns what is there."""
    dest = workspace / project.path
    if dest.exists():
        exclude_local_paths(dest, flashocc=project.name == "flashocc")
        pin = verify_existing(project, dest)
        log(f"ok    {project.name:8s} {project.path}: reused ({pin.revision})")
        return pin
    src = _find_in_sources_dir(project, sources_dir) if sources_dir else None
    if src is not None:
        _copy_checkout(src, dest, skip_nested=("mmdetection3d",) if project.name == "flashocc" else ())
        how = f"copied from {src}"
    else:
        try:
            _clone_pinned(project, dest)
            how = f"fetched from {project.repo}"
        except KitError as exc:
            if not project.sdist:
                where = f"{sources_dir}" if sources_dir else "no sources directory"
                raise SourcesUnavailable(f"{project.name}: cannot fetch {project.repo} and it is not in the sources "
                               f"directory ({where}).\n{exc}\nFix: on an air-gapped site put pristine "
                               f"checkouts in a directory and pass `--from DIR` (or set "
                               f"FLASHOCC_KIT_SOURCES).") from exc
            archive = download_sdist(project.sdist)
            unpack_sdist(archive, dest)
            how = f"unpacked from the PyPI sdist {project.sdist} (git unreachable)"
    if not gitutil.is_git_toplevel(dest):
        _commit_plain_copy(project, dest)
    exclude_local_paths(dest, flashocc=project.name == "flashocc")
    try:
        pin = verify_existing(project, dest)
    except KitError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    log(f"new   {project.name:8s} {project.path}: {how} ({pin.revision})")
    return pin


def base_commit_for_export(project: Project, path: Path) -> str:
    pin = check_pin(project, path)
    if pin.base_commit:
        return pin.base_commit
    if project.commit and gitutil.resolve_commit(path, project.commit):
        return project.commit  # HEAD moved on (local commits): diff against the pin anyway
    raise KitError(f"{project.name}: {path} is at {pin.revision}; cannot find the pin "
                   f"{project.describe_pin()} to export against.")
