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


@pytest.fixture(scope="session")
def flashocc_new_modules(tmp_path_factory):
    """sys.path entry holding flashocc.patch's new modules (`projects.device`, ops.bev_pool_v3...)."""
    root = extract_new_files(KIT_ROOT / "flashocc.patch", tmp_path_factory.mktemp("flashocc_new"))
    for name in [m for m in sys.modules if m == "projects" or m.startswith("projects.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == "projects" or m.startswith("projects.")]:
        del sys.modules[name]
