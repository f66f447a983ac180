"""Where the data set goes: refuse to touch what the generator did not write, never leave half a data set.

Everything is written into a temporary sibling of the data root, which is renamed into place only
once the whole set is written and validated. A marker file tells a synthetic set from a real one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import KitError
from ..occ3d import PANOPTIC_DIR, info_file
from .splits import VERSIONS

MARKER = ".flashocc-kit-synthetic.json"
# Everything the generator puts at the top of a data root; --overwrite replaces nothing else.
GENERATED = frozenset({"samples", "gts", PANOPTIC_DIR, "maps", *VERSIONS, MARKER, info_file("train"),
                       info_file("val")})


def resolve_out(out: str, relative_to: Path) -> Path:
    """The directory to write; the infos keep `out` as given, which resolves from `relative_to`."""
    path = Path(out).expanduser()
    return path if path.is_absolute() else relative_to / path


def read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KitError(f"{root / MARKER}: unreadable ({exc}). Fix: delete {root} yourself if it is synthetic") from exc


def check_target(root: Path, overwrite: bool) -> None:
    """Refuse real data sets, earlier synthetic ones without --overwrite, and unwritable places."""
    if root.exists() and not root.is_dir():
        raise KitError(f"--out {root}: exists and is not a directory. Fix: choose another --out")
    if root.is_dir() and any(root.iterdir()):
        marker = read_marker(root)
        if marker is None:
            raise KitError(f"--out {root}: the directory is not empty and has no {MARKER}, so it is not a data set "
                           "this generator wrote (a real nuScenes copy?); it is left alone. "
                           "Fix: choose another --out, or empty the directory yourself")
        if not overwrite:
            raise KitError(f"--out {root}: holds a synthetic data set from an earlier run (seed "
                           f"{marker.get('seed')}); it is kept. Fix: pass --overwrite to replace it, "
                           "or choose another --out")
        foreign = sorted(entry.name for entry in root.iterdir() if entry.name not in GENERATED)
        if foreign:
            raise KitError(f"--out {root}: synthetic, but it also holds files the generator did not write "
                           f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); nothing replaced. "
                           "Fix: move them elsewhere, then run again with --overwrite")
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise KitError(f"--out {root}: cannot write in {existing} (permission denied). Fix: choose a writable --out")


def stage(root: Path) -> Path:
    """A fresh temporary directory next to root (same file system, so the final rename is atomic)."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.synth-", dir=root.parent))
    except OSError as exc:
        raise KitError(f"--out {root}: cannot create a directory next to it ({exc.strerror}). "
                       "Fix: choose a writable --out") from exc
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would otherwise become the data root's mode
    return staging


def write_marker(staging: Path, content: dict) -> None:
    (staging / MARKER).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def commit(staging: Path, root: Path, overwrite: bool) -> None:
    """Put the staged set in place of root; the previous synthetic set goes only after that succeeded."""
    check_target(root, overwrite)  # again: the directory may have changed while rendering
    old = None
    if root.is_dir():
        if any(root.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.synth-old-", dir=root.parent))
            root.rename(old / "set")
        else:
            root.rmdir()
    try:
        staging.rename(root)
    except OSError as exc:
        if old is not None:
            (old / "set").rename(root)  # put the previous set back
            old.rmdir()
        raise KitError(f"--out {root}: could not move the new set into place ({exc.strerror})") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
