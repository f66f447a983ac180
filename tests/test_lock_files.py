"""The lock files are installed with --no-deps, so each must name every dependency of what it pins.

A dependency missing from the lock installs nothing and then fails at import time on a fresh
machine (pytest without pluggy did exactly that), so check the closure against the metadata of
the packages installed in the running environment.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

KIT_ROOT = Path(__file__).resolve().parents[1]
LOCKS = [KIT_ROOT / "requirements.txt", KIT_ROOT / "tests" / "requirements.txt"]
# Declared by a locked package but not needed at run time (see the note atop requirements.txt):
# lyft_dataset_sdk lists its dev tools, and plotly only for a 3D render method mmdet3d never calls.
KNOWN_UNNEEDED = {("lyft-dataset-sdk", name) for name in ("black", "flake8", "pytest", "plotly")}
# Installed from the workspace checkouts, not from a lock file.
FROM_WORKSPACE = {"mmcv-full", "mmcv", "mmdet", "mmdet3d"}


def locked(path: Path) -> dict[str, Requirement]:
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def test_every_lock_line_is_an_exact_pin():
    for path in LOCKS:
        for name, req in locked(path).items():
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: {name} is not pinned with =="


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: str(p.relative_to(KIT_ROOT)))
def test_lock_is_closed_under_installed_dependencies(lock: Path):
    pinned = {name for path in LOCKS for name in locked(path)} | FROM_WORKSPACE
    missing = []
    for name, req in locked(lock).items():
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here: run `python3 tools/kit.py setup` first")
        for dep_line in dist.requires or []:
            dep = Requirement(dep_line)
            if dep.marker is not None and not dep.marker.evaluate({"extra": ""}):
                continue
            dep_name = canonicalize_name(dep.name)
            if dep_name not in pinned and (name, dep_name) not in KNOWN_UNNEEDED:
                missing.append(f"{name} needs {dep_name}")
    assert not missing, f"add pins to {lock.name}: " + "; ".join(missing)
