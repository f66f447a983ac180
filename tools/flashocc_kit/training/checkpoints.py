"""Resuming: which checkpoint of a work dir a run continues from, and what each leg of a run did.

mmcv's own --auto-resume takes `latest.pth`, or the newest epoch/iter file, whatever its state: a
checkpoint cut off mid-save (the job killed while writing it) then crashes the resume. Here every
candidate is checked first (torch saves a zip archive: one cut off has no central directory, and a
damaged one fails its CRCs), the newest sound one is taken, and the ones skipped are named.

What mmcv's runners restore: the weights, the optimizer and its state, the epoch or iteration, the
hooks' state that is saved in the checkpoint (the EMA weights, the learning-rate schedule position).
What they cannot: the progress inside an interrupted epoch (an epoch-based run starts the epoch
again, with the data order of that epoch, so the weights after it are the uninterrupted run's) and
anything random outside the seeded sampler and model (data-loader workers reseed from the epoch).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import KitError
from .watch import HEARTBEATS

CHECKPOINT = re.compile(r"^(epoch|iter)_(\d+)(_ema)?\.pth$")
LEGS_FILE = "kit-run-legs.json"  # in the work dir: one entry per launch of the run


@dataclass(frozen=True)
class Candidate:
    path: Path
    kind: str  # epoch | iter
    number: int


def candidates(work_dir: Path) -> list[Candidate]:
    """The resumable checkpoints of a work dir (not the EMA-only copies), newest first."""
    found = []
    for path in Path(work_dir).glob("*.pth"):
        match = CHECKPOINT.match(path.name)
        if match and not match.group(3) and not path.is_symlink():
            found.append(Candidate(path, match.group(1), int(match.group(2))))
    return sorted(found, key=lambda c: (c.number, c.path.stat().st_mtime), reverse=True)


def damage(path: Path) -> str | None:
    """Why a checkpoint cannot be loaded, or None if it is a sound torch archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"not a complete torch checkpoint ({exc}): cut off while it was saved?"
    if bad is not None:
        return f"damaged: {bad} fails its CRC"
    if not any(name.endswith("data.pkl") for name in names):
        return "not a torch checkpoint (no data.pkl in the archive)"
    return None


def resume_point(work_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest sound checkpoint of a work dir (None: start afresh) and a warning per one skipped."""
    skipped = []
    latest = Path(work_dir) / "latest.pth"
    if latest.is_symlink() or latest.is_file():
        target = latest.resolve()
        why = damage(target) if target.is_file() else "points at nothing"
        if why:
            skipped.append(f"{latest} -> {target.name}: {why}")
    for candidate in candidates(work_dir):
        why = damage(candidate.path)
        if why is None:
            return candidate.path, skipped
        if not any(str(candidate.path.name) in s for s in skipped):
            skipped.append(f"{candidate.path}: {why}")
    return None, skipped


def check_resume_path(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"--resume {path}: no such checkpoint. Fix: give an existing epoch_N.pth / iter_N.pth, or "
                       "`--resume auto` for the newest sound one in the work dir")
    why = damage(path)
    if why:
        raise KitError(f"--resume {path}: {why}. Fix: give the checkpoint before it, or `--resume auto`")
    return path


# ---- the legs of a run ------------------------------------------------------------------------------------


def read_legs(work_dir: Path) -> list[dict]:
    path = Path(work_dir) / LEGS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        return []


def start_leg(work_dir: Path, started: float, resumed_from: Path | None) -> list[dict]:
    """Record this launch as a leg of the run before it trains (a fresh start forgets earlier legs).

    Recorded first, so that a launch killed outright (SIGKILL, a node lost) still counts: the next leg
    closes it, its length taken from the last file the run wrote while it lasted (heartbeats, mmcv's logs).
    """
    legs = read_legs(work_dir) if resumed_from is not None else []
    for leg in legs:
        if leg["outcome"] == "running":
            leg["seconds"] = round(max(0.0, last_activity(work_dir, leg["started_at"]) - leg["started_at"]), 1)
            leg["outcome"] = "interrupted (ended without finishing: killed?)"
    legs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)), "started_at": started,
                 "stamp": time.strftime("%Y%m%d_%H%M%S", time.localtime(started)),  # as mmcv names its logs
                 "seconds": 0.0, "resumed_from": str(resumed_from) if resumed_from else None, "outcome": "running"})
    write_legs(work_dir, legs)
    return legs


def finish_leg(work_dir: Path, seconds: float, outcome: str) -> list[dict]:
    """This launch's leg (the last one) ended: its length and how."""
    legs = read_legs(work_dir)
    legs[-1].update(seconds=round(seconds, 1), outcome=outcome)
    write_legs(work_dir, legs)
    return legs


def last_activity(work_dir: Path, since: float) -> float:
    """When the run last wrote one of its files (heartbeats, logs, checkpoints) after `since`; `since` if never."""
    times = [since]
    for pattern in ("*.log", "*.log.json", "*.pth", f"{HEARTBEATS}/*/*.json"):
        for path in Path(work_dir).glob(pattern):
            with contextlib.suppress(OSError):
                times.append(path.stat().st_mtime)
    return max(times)


def write_legs(work_dir: Path, legs: list[dict]) -> None:
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    (Path(work_dir) / LEGS_FILE).write_text(json.dumps(legs, indent=2) + "\n")
