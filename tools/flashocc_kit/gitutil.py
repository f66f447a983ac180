"""Thin wrappers around the git command line (the kit shells out to git, never reimplements it)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from .errors import KitError

# Options that make git's output independent of the user's configuration.
STABLE_CONFIG = (
    "-c", "core.quotePath=true",
    "-c", "core.autocrlf=false",
    "-c", "core.excludesFile=",
    "-c", "diff.noprefix=false",
    "-c", "diff.mnemonicPrefix=false",
    "-c", "diff.relative=false",
    "-c", "color.ui=false",
    "-c", "advice.detachedHead=false",
    "-c", "core.attributesFile=",
    "-c", "diff.suppressBlankEmpty=false",
    "-c", "i18n.commitEncoding=UTF-8",
    "-c", "i18n.logOutputEncoding=UTF-8",
)

# Options that make `git diff` output the same bytes for the same trees, whatever the configuration:
# the form the kit's patches are written in (full blob ids on every `index` line).
DIFF_OPTIONS = ("--full-index", "--binary", "--no-renames", "--no-ext-diff", "--no-textconv",
                "--no-color", "--src-prefix=a/", "--dst-prefix=b/", "--unified=3", "--inter-hunk-context=0",
                "--diff-algorithm=myers", "--indent-heuristic", "--no-relative", "-O/dev/null")


def git(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `git args` in cwd; raise KitError with git's own message when check fails."""
    full_env = {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    # surrogateescape: upstream files are not all UTF-8 (FlashOCC has GBK comments); bytes round-trip
    proc = subprocess.run(["git", *STABLE_CONFIG, *args], cwd=cwd, env=full_env, text=True,
                          encoding="utf-8", errors="surrogateescape", input=input_text, capture_output=True)
    if check and proc.returncode != 0:
        raise KitError(f"`git {' '.join(args)}` failed in {cwd}:\n{proc.stderr.strip()}")
    return proc


def git_bytes(cwd: Path, *args: str, env: dict[str, str] | None = None) -> bytes:
    """Run `git args` in cwd and return its raw output (file contents that must not be decoded)."""
    proc = subprocess.run(["git", *STABLE_CONFIG, *args], cwd=cwd, capture_output=True,
                          env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", **(env or {})})
    if proc.returncode != 0:
        raise KitError(f"`git {' '.join(args)}` failed in {cwd}:\n{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def is_git_toplevel(path: Path) -> bool:
    """True when path is the top of its own git work tree (not a folder inside another repo)."""
    if not (path / ".git").exists():
        return False
    proc = git(path, "rev-parse", "--show-toplevel", check=False)
    return proc.returncode == 0 and Path(proc.stdout.strip()).resolve() == path.resolve()


def outside_repo_env(path: Path) -> dict[str, str]:
    """Environment that stops git from treating a plain directory as part of an enclosing repo."""
    return {"GIT_CEILING_DIRECTORIES": str(path.resolve().parent)}


def head_commit(path: Path) -> str | None:
    proc = git(path, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
    return proc.stdout.strip() or None


def resolve_commit(path: Path, rev: str) -> str | None:
    proc = git(path, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False)
    return proc.stdout.strip() or None


def blob_id(data: bytes) -> str:
    """The git blob id of some bytes (what `git hash-object` prints), without a subprocess."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_blob_id(path: Path) -> str | None:
    """Blob id of a file as git would store it (a symlink is stored as its target); None if absent."""
    if path.is_symlink():
        return blob_id(os.readlink(path).encode())
    if not path.is_file():
        return None
    return blob_id(path.read_bytes())


def content_tree_id(path: Path) -> str:
    """Git tree id of a directory's files (ignored files excluded), computed in a throwaway index.

    Works on plain directories and on checkouts alike, and leaves both untouched.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_DIR": str(Path(tmp) / "git"), "GIT_WORK_TREE": str(path.resolve()),
               "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        subprocess.run(["git", "init", "-q", "--bare", env["GIT_DIR"]], check=True)
        git(path, "add", "-A", ".", env=env)
        return git(path, "write-tree", env=env).stdout.strip()


def changed_paths(path: Path) -> list[str]:
    """Paths that differ from HEAD in the work tree, untracked-but-not-ignored ones included."""
    out = git(path, "status", "--porcelain=v1", "-z", "--untracked-files=all").stdout
    paths = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        if not entry:
            i += 1
            continue
        status, name = entry[:2], entry[3:]
        paths.append(name)
        if "R" in status or "C" in status:
            i += 1  # rename/copy entries carry the original path next
        i += 1
    return sorted(paths)
