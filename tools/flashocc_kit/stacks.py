"""The support matrix: stacks (a torch and its lock) x Pythons x architectures, and what was done here.

A *cell* is one stack on one CPython minor version and one architecture. tools/pins.ini names each
stack's lock file and Pythons; torch and torchvision are pinned in the lock, once. `setup` and `test`
record in <workspace>/.kit/cells.json when each cell was last set up and tested here, which
`kit.py stacks` prints beside the matrix.
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .chip import A5, PACKAGES
from .errors import KitError
from .locking import exclusively
from .pins import KIT_ROOT, read_pins

RECORDS = "cells.json"  # in the workspace's .kit/
_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)\s*(?:;\s*([^#]*?))?\s*(?:#.*)?$")


@dataclass(frozen=True)
class LockLine:
    name: str
    version: str
    marker: str  # PEP 508 marker, "" for every cell
    source: Path


def read_lock(path: Path, _seen: tuple[Path, ...] = ()) -> list[LockLine]:
    """A lock file's pins, `-r` includes followed (relative to the including file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise KitError(f"{path}: includes itself (through {', '.join(p.name for p in _seen)})")
    if not path.is_file():
        raise KitError(f"lock file {path} is missing: the kit checkout is incomplete")
    lines: list[LockLine] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if text.startswith("-r"):
            lines += read_lock(path.parent / text[2:].strip(), (*_seen, path))
            continue
        match = _PIN.match(raw)
        if not match:
            raise KitError(f"{path}:{number}: expected NAME==VERSION [; marker], found {raw.strip()!r}")
        lines.append(LockLine(match.group(1), match.group(2), (match.group(3) or "").strip(), path))
    return lines


@dataclass(frozen=True)
class Stack:
    name: str
    lock: str  # relative to the kit root
    pythons: tuple[str, ...]
    torch_npu: str
    mx_driving: str  # DrivingSDK's PyPI package for Atlas A2 (and A3): mx-driving
    disk_gib: float  # free disk a new environment of this stack asks for (pins.ini says how it was measured)
    default: bool = False
    mx_driving_a5: str | None = None  # DrivingSDK's PyPI package for Atlas A5, mx-driving-a5 (torch >= 2.6 only)

    @property
    def lock_file(self) -> Path:
        return KIT_ROOT / self.lock

    @property
    def own_lock_lines(self) -> list[LockLine]:
        """The lines of the stack's own lock file, the torch family (not those it includes)."""
        return [line for line in read_lock(self.lock_file) if line.source == self.lock_file.resolve()]

    def pinned(self, name: str) -> str:
        for line in read_lock(self.lock_file):
            if line.name.lower() == name.lower() and not line.marker:
                return line.version
        raise KitError(f"{self.lock}: no unconditional pin of {name}")

    @property
    def torch(self) -> str:
        return self.pinned("torch")

    @property
    def python_range(self) -> str:
        return f"{self.pythons[0]}-{self.pythons[-1]}" if len(self.pythons) > 1 else self.pythons[0]

    def serves(self, python: str) -> bool:
        return python in self.pythons

    def drivingsdk(self, chip: str) -> str | None:
        """`package==version` of DrivingSDK's wheel for this stack on a chip (a2 | a5); None: there is none."""
        version = self.mx_driving_a5 if chip == A5 else self.mx_driving
        return f"{PACKAGES[chip]}=={version}" if version else None

    def takes_torch(self, version: str) -> bool:
        """Whether an installed torch (say 2.1.0+cpu, 2.1.0a0) is this stack's torch release."""
        return _minor(version) == _minor(self.torch)


@dataclass(frozen=True)
class Cell:
    stack: Stack
    python: str  # "3.8"
    arch: str  # "x86_64" | "aarch64"

    @property
    def id(self) -> str:
        return f"{self.stack.name}-py{self.python}-{self.arch}"

    def marker_environment(self) -> dict[str, str]:
        """What PEP 508 markers see in this cell (packaging.markers.Marker.evaluate takes it)."""
        return {"python_version": self.python, "python_full_version": f"{self.python}.0",
                "platform_machine": self.arch, "sys_platform": "linux", "platform_system": "Linux",
                "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "extra": ""}


def _minor(version: str) -> tuple[int, int]:
    parts = re.findall(r"\d+", version)[:2]
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 else (0, 0)


def load_stacks() -> dict[str, Stack]:
    parser = read_pins()
    stacks = {}
    for section in parser.sections():
        kind, _, name = section.partition(":")
        if kind == "stack":
            fields = parser[section]
            stacks[name] = Stack(name=name, lock=fields["lock"], pythons=tuple(fields["pythons"].split()),
                                 torch_npu=fields["torch-npu"], mx_driving=fields["mx-driving"],
                                 disk_gib=fields.getfloat("disk-gib"),
                                 default=fields.getboolean("default", False),
                                 mx_driving_a5=fields.get("mx-driving-a5"))
    if sum(s.default for s in stacks.values()) != 1:
        raise KitError("tools/pins.ini: exactly one [stack:...] must say `default = yes`")
    return stacks


def architectures() -> list[str]:
    return read_pins()["matrix"]["architectures"].split()


def default_stack() -> Stack:
    return next(s for s in load_stacks().values() if s.default)


def all_cells() -> list[Cell]:
    return [Cell(stack, python, arch) for stack in load_stacks().values() for python in stack.pythons
            for arch in architectures()]


def this_python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def interpreters_for(pythons: Sequence[str]) -> list[str]:
    """`python3.X` commands on PATH that run, for these versions (to name in a refusal; a pyenv shim of a
    version that is not selected is on PATH but does not run)."""
    found = []
    for version in pythons:
        command = shutil.which(f"python{version}")
        if command and subprocess.run([command, "-c", ""], capture_output=True).returncode == 0:
            found.append(f"python{version}")
    return found


def choose_stack(python: str, requested: str | None, installed_torch: str | None,
                 arch: str | None = None) -> Stack:
    """The stack to set up for an interpreter: the one of the torch it keeps, else --stack, else the default.

    Every refusal is one sentence that names what would work.
    """
    stacks = load_stacks()
    arch = arch or platform.machine()
    if arch not in architectures():
        raise KitError(f"this machine is {arch}; the kit's stacks are built for {' and '.join(architectures())} only")
    servable = sorted({p for s in stacks.values() for p in s.pythons}, key=_minor)
    if not any(s.serves(python) for s in stacks.values()):
        found = interpreters_for(servable)
        raise KitError(
            f"Python {python} can host none of the kit's stacks ("
            + ", ".join(f"{s.name} needs Python {s.python_range}" for s in stacks.values())
            + "; there are no torch or mx-driving wheels for others): "
            + (f"run the kit with {' or '.join(found)} (found here), e.g. `{found[-1]} tools/kit.py setup`."
               if found else
               f"install one of Python {', '.join(servable[:-1])} or {servable[-1]} and run the kit with it, e.g. "
               f"`python{servable[-1]} tools/kit.py setup`."))
    if installed_torch is not None:
        kept = [s for s in stacks.values() if s.takes_torch(installed_torch)]
        if not kept:
            raise KitError(f"the torch {installed_torch} this interpreter has is no stack's ("
                           + ", ".join(f"{s.name}: torch {s.torch}" for s in stacks.values())
                           + "): set up with `--torch install` for a venv with its own torch, or use an "
                             "interpreter whose torch is one of those")
        if requested is not None and requested != kept[0].name:
            raise KitError(f"--stack {requested}, but this interpreter's torch {installed_torch} belongs to "
                           f"{kept[0].name}: keep it (drop --stack) or install the stack's own (`--torch install`)")
        chosen = kept[0]
    elif requested is not None:
        if requested not in stacks:
            raise KitError(f"--stack {requested}: choose from {', '.join(stacks)}")
        chosen = stacks[requested]
    else:
        chosen = default_stack()
    if not chosen.serves(python):
        others = [s.name for s in stacks.values() if s.serves(python)]
        raise KitError(f"{chosen.name} needs Python {chosen.python_range} and this is Python {python}: use "
                       + (f"--stack {' or '.join(others)}, or " if others else "")
                       + f"one of {', '.join(interpreters_for(chosen.pythons)) or 'those Pythons'}")
    return chosen


def npu_contract() -> list[str]:
    """The torch-npu and mx-driving releases the patches' NPU calls are checked against: each stack's, and
    the extra ones of pins.ini's [npu_contract]."""
    wanted = []
    for stack in load_stacks().values():
        wanted += [f"mx-driving=={stack.mx_driving}", f"torch-npu=={stack.torch_npu}"]
    parser = read_pins()
    if parser.has_section("npu_contract"):
        wanted += [f"{name}=={version}" for name, versions in parser["npu_contract"].items()
                   for version in versions.split()]
    return sorted(set(wanted))


# ---- what was done here -------------------------------------------------------------------------------------


def records_path(workspace: Path) -> Path:
    return Path(workspace) / ".kit" / RECORDS


def read_records(workspace: Path) -> dict[str, dict]:
    path = records_path(workspace)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def record(workspace: Path, cell_id: str, event: str, **details: object) -> None:
    """Note that `event` (setup | test) happened for a cell now, with its outcome (cells set up or tested at once
    take turns: neither's record is lost)."""
    path = records_path(workspace)
    with exclusively(path.with_name(path.name + ".lock")):
        records = read_records(workspace)
        entry = {"when": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), **details}
        records.setdefault(cell_id, {})[event] = entry
        path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")


def matrix_rows(workspace: Path) -> list[dict[str, str]]:
    records = read_records(workspace)
    rows = []
    for cell in all_cells():
        done = records.get(cell.id, {})
        setup, test = done.get("setup"), done.get("test")
        rows.append({
            "stack": cell.stack.name + (" (default)" if cell.stack.default else ""),
            "torch": cell.stack.torch, "python": cell.python, "arch": cell.arch, "lock": cell.stack.lock,
            "set up here": f"{setup['when'][:16]} {'ok' if setup.get('ok') else 'FAILED'}" if setup else "-",
            "tested here": f"{test['when'][:16]} {test.get('result', '?')}" if test else "-",
        })
    return rows
