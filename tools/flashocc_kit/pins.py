"""The upstream pins (tools/pins.ini) and the kit's fixed locations.

pins.ini is read with configparser: the kit's CLI starts on any Python >= 3.8 with the standard
library only (tomllib exists from 3.11 on).
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import KitError

KIT_ROOT = Path(__file__).resolve().parents[2]
PINS_FILE = KIT_ROOT / "tools" / "pins.ini"
PINS_ENV = "FLASHOCC_KIT_PINS"  # another pins file (tests, forks)
# Projects in the order they are fetched, patched and installed (mmdet3d lives inside FlashOCC).
PROJECT_ORDER = ("flashocc", "mmcv", "mmdet", "mmdet3d")
# The patch queues (one concern per patch, in the order of each queue's `series`) and the files
# the kit wrote, at the paths they take upstream: what the root patches are built from.
QUEUES_DIR = KIT_ROOT / "patches"
PORT_DIR = KIT_ROOT / "port"


@dataclass(frozen=True)
class Project:
    name: str
    path: str  # relative to the workspace
    patch: str  # relative to the kit root (an absolute path stays as it is: tests, forks)
    repo: str
    ref: str
    commit: str | None = None
    sdist: str | None = None
    sdist_tree: str | None = None
    also_applies_to_sdist: str | None = None
    queue: str | None = None  # default: patches/<name>
    port: str | None = None  # default: port/<name>

    @property
    def patch_file(self) -> Path:
        return KIT_ROOT / self.patch

    @property
    def queue_dir(self) -> Path:
        return KIT_ROOT / self.queue if self.queue else QUEUES_DIR / self.name

    @property
    def port_dir(self) -> Path:
        return KIT_ROOT / self.port if self.port else PORT_DIR / self.name

    def describe_pin(self) -> str:
        if self.commit:
            return f"{self.ref} @ {self.commit[:12]}"
        return f"{self.ref} (sdist {self.sdist})"


def pins_path(pins_file: Path | None = None) -> Path:
    return Path(pins_file or os.environ.get(PINS_ENV, PINS_FILE))


def read_pins(pins_file: Path | None = None) -> configparser.ConfigParser:
    path = pins_path(pins_file)
    fix = f"Fix: point {PINS_ENV} at a pins file like tools/pins.ini, or unset it" if os.environ.get(PINS_ENV) \
        else "Fix: restore tools/pins.ini (`git checkout tools/pins.ini`)"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        if not parser.read(path, encoding="utf-8"):
            raise KitError(f"{path}: cannot read the pins file. {fix}")
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise KitError(f"{path}: not a valid pins file ({first}). {fix}") from None
    return parser


def load_projects(pins_file: Path | None = None) -> dict[str, Project]:
    """The four projects, in PROJECT_ORDER; $FLASHOCC_KIT_PINS points at another file (tests, forks)."""
    parser = read_pins(pins_file)
    projects = {}
    for section in parser.sections():
        kind, _, name = section.partition(":")
        if kind == "project":
            projects[name] = Project(name=name, **dict(parser[section]))
    missing = [name for name in PROJECT_ORDER if name not in projects]
    if missing:
        raise KitError(f"{pins_path(pins_file)}: no [project:{missing[0]}] section. Fix: add it, as tools/pins.ini has")
    return {name: projects[name] for name in PROJECT_ORDER}


def cache_dir() -> Path:
    """Kit-wide cache (wheels, downloads); survives workspaces and clones."""
    return Path(os.environ.get("FLASHOCC_KIT_CACHE", Path.home() / ".cache" / "flashocc-kit"))


def default_sources_dir() -> Path | None:
    """Directory of pristine checkouts for air-gapped sites, if one is configured or present."""
    env = os.environ.get("FLASHOCC_KIT_SOURCES")
    if env:
        if not Path(env).is_dir():
            raise KitError(f"FLASHOCC_KIT_SOURCES={env} is not a directory. Fix: point it at the directory of pristine "
                           "checkouts (README, Air-gapped sites), or unset it")
        return Path(env)
    candidate = cache_dir() / "sources"
    return candidate if candidate.is_dir() else None


def default_workspace() -> Path:
    """The seed's layout: the upstream checkouts sit next to the patches, in the kit root."""
    env = os.environ.get("FLASHOCC_KIT_WORKSPACE")
    if env and not Path(env).is_dir():
        raise KitError(f"FLASHOCC_KIT_WORKSPACE={env} is not a directory. Fix: create it, point it at the directory "
                       "that holds (or will hold) FlashOCC/, mmcv/ and mmdetection/, or unset it")
    return Path(env or KIT_ROOT)
