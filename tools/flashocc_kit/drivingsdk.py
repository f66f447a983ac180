"""DrivingSDK (`mx_driving`) for a stack: its wheel from PyPI, or one built from a checkout.

A source build (`kit.py setup --drivingsdk DIR`) runs the checkout's own `ci/build.sh --python=X.Y`
(with `--a5` for an Atlas A5, which builds the ascend950 kernels into packages/vendors/customize_arch35)
in the kit's environment (CANN sourced) and caches the wheel, keyed by the checkout's content, the
Python, the machine, the torch and the chip. Which torch a branch builds for is read from the checkout's own
version table (docs/zh/version/versions.md): a branch that does not list the stack's torch is
refused, naming the branches that do; on an A5, a branch whose ci/build.sh has no `--a5` is refused too.
"""

from __future__ import annotations

import hashlib
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import gitutil
from .chip import A5, LABELS
from .errors import KitError
from .pins import cache_dir
from .stacks import Stack

VERSION_TABLE = Path("docs") / "zh" / "version" / "versions.md"
BUILD_SCRIPT = Path("ci") / "build.sh"
A5_FLAG = "--a5"  # ci/build.sh's switch to the A5 kernels (USE_ARCH35)


@dataclass(frozen=True)
class Support:
    """One row of DrivingSDK's version table: a branch builds for this torch on these Pythons."""

    branch: str
    torch: str
    pythons: tuple


def read_version_table(text: str) -> list[Support]:
    """The rows of versions.md; a row with an empty branch cell continues the branch above."""
    rows: list[Support] = []
    branch = ""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.match(r"^\d+\.\d+(\.\d+)?$", cells[3]):
            continue  # the header, the rule, prose
        branch = cells[0] or branch
        pythons = tuple(re.findall(r"Python(\d+\.\d+)", cells[2]))
        rows.append(Support(branch, cells[3], pythons))
    return rows


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def branches_for(rows: list[Support], torch: str, python: str) -> list[str]:
    found = []
    for row in rows:
        if _minor(row.torch) == _minor(torch) and python in row.pythons and row.branch not in found:
            found.append(row.branch)
    return found


def check_checkout(checkout: Path, stack: Stack, python: str, chip: str | None = None) -> str:
    """The checkout's branch, if it builds DrivingSDK for the stack's torch on this Python (and for the chip: an
    A5 build needs `ci/build.sh --a5`); else a clear error."""
    checkout = Path(checkout)
    if not (checkout / BUILD_SCRIPT).is_file():
        raise KitError(f"--drivingsdk {checkout}: no {BUILD_SCRIPT} there; point it at a DrivingSDK checkout "
                       "(git clone https://gitee.com/ascend/DrivingSDK.git)")
    table = checkout / VERSION_TABLE
    if not table.is_file():
        raise KitError(f"--drivingsdk {checkout}: no {VERSION_TABLE} to tell which torch it builds for")
    rows = read_version_table(table.read_text(encoding="utf-8"))
    supporting = branches_for(rows, stack.torch, python)
    hint = (f"branches that do: {', '.join(supporting)} (`git -C {checkout} checkout {supporting[0]}`)" if supporting
            else "no branch in its version table does")
    proc = gitutil.git(checkout, "rev-parse", "--abbrev-ref", "HEAD", check=False)
    branch = proc.stdout.strip() if proc.returncode == 0 else ""
    if branch in ("", "HEAD"):
        raise KitError(f"--drivingsdk {checkout} is not on a branch, so its torch support is unknown; {hint}")
    own = [row for row in rows if row.branch == branch]
    if not any(_minor(row.torch) == _minor(stack.torch) and python in row.pythons for row in own):
        builds = sorted({row.torch for row in own}) or ["nothing listed"]
        raise KitError(f"--drivingsdk {checkout} is on {branch}, which builds DrivingSDK for torch "
                       f"{', '.join(builds)}; {stack.name} needs torch {stack.torch} on Python {python}: {hint}")
    if chip == A5 and A5_FLAG not in (checkout / BUILD_SCRIPT).read_text(errors="replace"):
        raise KitError(f"--drivingsdk {checkout} is on {branch}, whose {BUILD_SCRIPT} has no {A5_FLAG}, so it cannot "
                       f"build kernels for this host's {LABELS[A5]}. Fix: `git -C {checkout} checkout master` (A5 "
                       "kernels came to DrivingSDK in 2026), or install the mx-driving-a5 wheel (drop --drivingsdk).")
    return branch


def build_command(python: str, chip: str) -> list[str]:
    """ci/build.sh for this Python, with --a5 for an Atlas A5 (the ascend950 kernels instead of the A2 ones)."""
    return ["bash", str(BUILD_SCRIPT), f"--python={python}", *([A5_FLAG] if chip == A5 else [])]


def wheel_cache_key(checkout: Path, python: str, torch: str, chip: str) -> str:
    parts = [gitutil.content_tree_id(checkout), python, platform.machine(), torch, chip]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def cached_wheel(key: str) -> Path | None:
    wheels = sorted((cache_dir() / "wheels" / "mx-driving" / key).glob("*.whl"))
    return wheels[-1] if wheels else None


def keep_wheel(key: str, dist: Path) -> Path:
    """Copy the newest wheel a build left in dist/ into the cache; return the cached file."""
    built = sorted(dist.glob("mx_driving-*.whl"), key=lambda p: p.stat().st_mtime)
    if not built:
        raise KitError(f"the DrivingSDK build left no mx_driving-*.whl in {dist}")
    target = cache_dir() / "wheels" / "mx-driving" / key
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built[-1], target / built[-1].name)
    return target / built[-1].name


def build_environment(venv_bin: Path, base: dict[str, str]) -> dict[str, str]:
    """ci/build.sh runs `python3.X setup.py bdist_wheel`: the kit's environment's interpreter must come first."""
    return {"PATH": f"{venv_bin}:{base.get('PATH', '')}"}
