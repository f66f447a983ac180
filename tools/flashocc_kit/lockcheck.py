"""Does every lock line have something to install in every cell? Asked of PyPI's index, nothing downloaded.

For each cell of the matrix (stack x Python x architecture), the lines of the stack's lock (and of the
test tools' lock) whose markers hold there, exactly one per package, each with a wheel whose tags that
CPython on a manylinux host (glibc up to MAX_GLIBC) accepts, or else an sdist. `pip download
--only-binary --python-version --platform` answers the same question (it agreed on all 1213
(cell, pin) pairs when checked) but moves every wheel, 24 GB for the matrix; the index answers it
from file names. Needs `packaging` (the kit's environment has it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .pypi import index_files
from .stacks import Cell, LockLine, read_lock

MAX_GLIBC = (2, 28)  # torch 2.7's wheels need it; the oldest a cell may be asked to run on
MARKER_VARIABLES = ("python_version", "platform_machine")


@dataclass(frozen=True)
class Resolution:
    line: LockLine
    filename: str | None  # None: nothing installs
    kind: str  # wheel | sdist | missing


def supported_tags(cell: Cell) -> set:
    from packaging import tags

    version = tuple(int(x) for x in cell.python.split("."))
    platforms = [f"manylinux_2_{minor}_{cell.arch}" for minor in range(MAX_GLIBC[1], 16, -1)]
    platforms.append(f"manylinux2014_{cell.arch}")
    if cell.arch == "x86_64":
        platforms += ["manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64",
                      "manylinux1_x86_64"]
    interpreter = f"cp{version[0]}{version[1]}"
    found = set(tags.cpython_tags(version, abis=[interpreter], platforms=platforms))
    return found | set(tags.compatible_tags(version, interpreter, platforms=platforms))


def applicable(lines: list[LockLine], cell: Cell) -> list[LockLine]:
    from packaging.markers import Marker

    environment = cell.marker_environment()
    return [line for line in lines if not line.marker or Marker(line.marker).evaluate(environment)]


def resolve(line: LockLine, cell: Cell, accepted: set) -> Resolution:
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_version, parse_sdist_filename, parse_wheel_filename
    from packaging.version import Version

    wanted = canonicalize_version(line.version)
    python = Version(f"{cell.python}.0")
    sdist = None
    for entry in index_files(line.name):
        name = entry["filename"]
        if entry.get("yanked"):
            continue
        requires = entry.get("requires-python")
        try:
            if requires and python not in SpecifierSet(requires):
                continue
        except ValueError:
            pass  # an unparsable Requires-Python: pip ignores it too
        try:
            if name.endswith(".whl"):
                _, version, _, wheel_tags = parse_wheel_filename(name)
                if canonicalize_version(version) == wanted and wheel_tags & accepted:
                    return Resolution(line, name, "wheel")
            elif name.endswith((".tar.gz", ".zip")):
                _, version = parse_sdist_filename(name)
                if canonicalize_version(version) == wanted:
                    sdist = name
        except ValueError:
            continue
    return Resolution(line, sdist, "sdist" if sdist else "missing")


def check_cell(cell: Cell, extra_locks: tuple[Path, ...] = ()) -> tuple[list[Resolution], list[str]]:
    """Every applicable line of the cell's locks resolved, and the problems: a package pinned twice or
    not at all installable (an sdist counts only where noted as buildable: never, in these locks)."""
    lines = read_lock(cell.stack.lock_file) + [line for lock in extra_locks for line in read_lock(lock)]
    chosen = applicable(lines, cell)
    problems = []
    seen: dict[str, LockLine] = {}
    for line in chosen:
        key = line.name.lower().replace("_", "-")
        if key in seen:
            problems.append(f"{cell.id}: {line.name} pinned twice ({seen[key].version}, {line.version})")
        seen[key] = line
    accepted = supported_tags(cell)
    resolutions = [resolve(line, cell, accepted) for line in chosen]
    for r in resolutions:
        if r.kind != "wheel":
            problems.append(f"{cell.id}: {r.line.name}=={r.line.version} has no wheel for CPython {cell.python} "
                            f"on manylinux {cell.arch}" + (f" (only the sdist {r.filename})" if r.filename else ""))
    return resolutions, problems


def unsupported_markers(lines: list[LockLine]) -> list[str]:
    """Lines whose markers use anything but the matrix's variables (a cell could not evaluate them)."""
    from packaging.markers import Marker

    bad = []
    for line in lines:
        if line.marker:
            text = str(Marker(line.marker))
            used = {v for v in ("python_version", "platform_machine", "sys_platform", "python_full_version",
                                "platform_system", "implementation_name", "extra") if v in text}
            if used - set(MARKER_VARIABLES):
                bad.append(f"{line.source.name}: {line.name}: marker {line.marker!r}")
    return bad
