"""Free disk space: checked before setup installs a stack, and named when a step runs out of it.

A cell's environment holds torch with its CUDA libraries (several GiB), and pip keeps each download
in its temporary directory until the install ends, so a nearly full disk fails half-way through an
install. Setup asks for the room first; a step that still runs out says where, and how to make room.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import KitError

GIB = 1024 ** 3
NO_SPACE = "No space left on device"  # strerror(ENOSPC), as pip, gcc and Python print it


def existing_parent(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (a venv about to be created has none of its own yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(existing_parent(path)).free


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB"


def room_report(paths: dict[str, Path]) -> str:
    """'the environment (/x/.venvs/...): 3.2 GiB free; pip's temporary files (/tmp): 3.2 GiB free'."""
    return "; ".join(f"{what} ({path}): {gib(free_bytes(path))} free" for what, path in paths.items())


def install_paths(venv: Path) -> dict[str, Path]:
    """Where installing into `venv` writes: the venv itself and pip's temporary directory (TMPDIR)."""
    return {"the environment": Path(venv), "pip's temporary files": Path(tempfile.gettempdir())}


def require_room(venv: Path, need_gib: float, what: str) -> None:
    """Refuse, before anything is written, to install `what` (needing `need_gib`) where there is less room.

    The figure is the install's peak with the venv and pip's temporary directory on one disk; asking it of
    each filesystem involved errs on the safe side where they are two.
    """
    paths = install_paths(venv)
    short = {label: path for label, path in paths.items() if free_bytes(path) < need_gib * GIB}
    if short:
        raise KitError(f"{what} needs about {need_gib:g} GiB of free disk, and there is less: {room_report(short)}. "
                       f"Fix: {make_room_hint(venv)}")


def make_room_hint(venv: Path) -> str:
    others = other_environments(venv)
    listed = (" (here: " + ", ".join(f"{p} {gib(size)}" for p, size in others) + ")") if others else ""
    return ("free space on that disk, for example by removing environments of cells you no longer use"
            f"{listed}, or point TMPDIR at a larger disk; then run the same command again (what is done is kept)")


def other_environments(venv: Path) -> list[tuple[Path, int]]:
    """The sibling cell environments of `venv` (<workspace>/.venvs/*) with their sizes, largest first."""
    parent = Path(venv).absolute().parent
    if not parent.is_dir():
        return []
    found = [(p, tree_bytes(p)) for p in sorted(parent.iterdir())
             if p.is_dir() and not p.is_symlink() and p != Path(venv).absolute() and (p / "pyvenv.cfg").is_file()]
    return sorted(found, key=lambda item: -item[1])


def tree_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def explain_if_disk_full(output: str, venv: Path, step: str) -> str | None:
    """For a failed step whose output says the disk is full: where the room ran out and how to make room."""
    if NO_SPACE not in output:
        return None
    return (f"setup step {step} ran out of disk space ({NO_SPACE}). Now: {room_report(install_paths(venv))}. "
            f"Fix: {make_room_hint(venv)}")
