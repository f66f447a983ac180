"""Shared fixtures: the kit on sys.path, small git repositories, and the upstream sources (if any)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KIT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(KIT_ROOT / "tools"))

from flashocc_kit import pins  # noqa: E402

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def write_files(root: Path, files: dict[str, str | None]) -> None:
    for rel, text in files.items():
        path = root / rel
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def make_repo(path: Path, files: dict[str, str]) -> str:
    """A git repository with one commit holding files; returns the commit id."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write_files(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "upstream")
    return git(path, "rev-parse", "HEAD")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root except .git, for before/after comparisons."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts}


@pytest.fixture
def upstream_files() -> dict[str, str]:
    body = "".join(f"line {i}\n" for i in range(1, 41))
    return {"pkg/__init__.py": "VERSION = '1.0'\n", "pkg/core.py": body, "pkg/gone.py": "old\n",
            "README.md": "upstream\n", ".gitignore": "build/\n"}


@pytest.fixture
def edits() -> dict[str, str | None]:
    body = "".join(f"line {i}\n" if i != 20 else "line 20 patched\n" for i in range(1, 41))
    return {"pkg/core.py": body, "pkg/new_module.py": "NEW = True\n", "pkg/gone.py": None,
            "pkg/__init__.py": "VERSION = '1.0+kit'\n"}


def upstream_sources_dir() -> Path | None:
    """The pristine upstream checkouts, or None (tests needing them skip, saying so)."""
    found = pins.default_sources_dir()
    if found and (found / "FlashOCC").is_dir():
        return found
    return None


@pytest.fixture
def sources_dir() -> Path:
    found = upstream_sources_dir()
    if found is None:
        pytest.skip("upstream sources not present: run ../shared/tools/prepare-upstream-sources.sh "
                    "or set FLASHOCC_KIT_SOURCES (see README, 'Air-gapped sites')")
    return found


def extract_new_files(patch: Path, dest: Path) -> Path:
    """Write the files a patch creates into dest, with empty package __init__s where the
    upstream ones would be; returns dest. Lets tests import the port's new modules from the
    patch itself, with no upstream checkout."""
    from flashocc_kit.patchfile import new_file_contents

    for rel, text in new_file_contents(patch.read_text()).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        for package in target.parents:
            if package == dest:
                break
            (package / "__init__.py").touch(exist_ok=True)
    return dest


NEW_MODULES_PACKAGE = "flashocc_patch_new"


@pytest.fixture(scope="session")
def flashocc_new_modules(tmp_path_factory) -> Path:
    """flashocc.patch's new files, extracted: the returned directory holds `projects/` (for
    subprocesses: put it on PYTHONPATH); in this process they import as
    `flashocc_patch_new.projects...`, which cannot clash with a real FlashOCC checkout."""
    parent = tmp_path_factory.mktemp("flashocc_new")
    root = extract_new_files(KIT_ROOT / "flashocc.patch", parent / NEW_MODULES_PACKAGE)
    (root / "__init__.py").touch()
    sys.path.insert(0, str(parent))
    yield root
    sys.path.remove(str(parent))


def _skip_without_patched_flashocc() -> Path:
    """The workspace's patched FlashOCC checkout, importable here; skips (saying why) if not."""
    from flashocc_kit.patching import PatchState
    from flashocc_kit.workspace import Workspace

    ws = Workspace.at(pins.default_workspace())
    if not ws.flashocc.is_dir():
        pytest.skip(f"no FlashOCC checkout at {ws.flashocc}: run `python3 tools/kit.py setup` "
                    "(needs GitHub or the upstream sources directory)")
    states = ws.states()
    if states["flashocc"] is not PatchState.APPLIED or states["mmdet3d"] is not PatchState.APPLIED:
        pytest.skip(f"patches not applied in {ws.root} ({states}): run `python3 tools/kit.py apply`")
    try:
        import mmdet3d  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the patched stack is not installed in this interpreter ({exc}): "
                    "run the tests with the kit's environment (`python3 tools/kit.py test`)")
    return ws.flashocc


@pytest.fixture(scope="session")
def flashocc_root() -> Path:
    root = _skip_without_patched_flashocc()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    os.environ.setdefault("FLASHOCC_DEVICE", "cpu")
    import projects.mmdet3d_plugin  # noqa: F401  (registers the FlashOCC modules)

    return root
