"""The upstream pins (tools/pins.toml) and the kit's fixed locations."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

KIT_ROOT = Path(__file__).resolve().parents[2]
PINS_FILE = KIT_ROOT / "tools" / "pins.toml"
# Projects in the order they are fetched, patched and installed (mmdet3d lives inside FlashOCC).
PROJECT_ORDER = ("flashocc", "mmcv", "mmdet", "mmdet3d")


@dataclass(frozen=True)
class Project:
    name: str
    path: str  # relative to the workspace
    patch: str  # relative to the kit root
    repo: str
    ref: str
    commit: str | None = None
    sdist: str | None = None
    sdist_tree: str | None = None
    also_applies_to_sdist: str | None = None

    @property
    def patch_file(self) -> Path:
        return KIT_ROOT / self.patch  # an absolute `patch` (tests, forks) stays as it is

    def describe_pin(self) -> str:
        if self.commit:
            return f"{self.ref} @ {self.commit[:12]}"
        return f"{self.ref} (sdist {self.sdist})"


def load_projects(pins_file: Path | None = None) -> dict[str, Project]:
    """Read the pins; $FLASHOCC_KIT_PINS points at another file (tests, forks)."""
    pins_file = pins_file or Path(os.environ.get("FLASHOCC_KIT_PINS", PINS_FILE))
    data = tomllib.loads(pins_file.read_text())
    projects = {name: Project(name=name, **fields) for name, fields in data["projects"].items()}
    missing = [name for name in PROJECT_ORDER if name not in projects]
    if missing:
        raise ValueError(f"{pins_file}: no entry for {', '.join(missing)}")
    return {name: projects[name] for name in PROJECT_ORDER}


def cache_dir() -> Path:
    """Kit-wide cache (wheels, downloads); survives workspaces and clones."""
    return Path(os.environ.get("FLASHOCC_KIT_CACHE", Path.home() / ".cache" / "flashocc-kit"))


def default_sources_dir() -> Path | None:
    """Directory of pristine checkouts for air-gapped sites, if one is configured or present."""
    env = os.environ.get("FLASHOCC_KIT_SOURCES")
    if env:
        return Path(env)
    candidate = cache_dir() / "sources"
    return candidate if candidate.is_dir() else None


def default_workspace() -> Path:
    """The seed's layout: the upstream checkouts sit next to the patches, in the kit root."""
    return Path(os.environ.get("FLASHOCC_KIT_WORKSPACE", KIT_ROOT))


def load_npu_contract(pins_file: Path | None = None) -> list[str]:
    """The mx-driving and torch-npu releases whose wheels the patch's NPU calls are checked against."""
    pins_file = pins_file or Path(os.environ.get("FLASHOCC_KIT_PINS", PINS_FILE))
    data = tomllib.loads(pins_file.read_text()).get("npu_contract", {})
    return [f"{name}=={version}" for name, versions in data.items() for version in versions]
