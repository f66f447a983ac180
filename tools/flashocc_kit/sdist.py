"""PyPI source distributions: download (verified by sha256, cached) and unpack, without pip or torch.

`pip download` of mmdet/mmcv sdists runs their setup.py, which imports torch; reading PyPI's
JSON API and fetching the archive directly needs neither.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from .errors import KitError
from .pins import cache_dir

PYPI_SIMPLE = "https://pypi.org/simple/{name}/"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"  # PEP 691: files with their hashes


def _split_requirement(requirement: str) -> tuple[str, str]:
    name, sep, version = requirement.partition("==")
    if not sep or not name or not version:
        raise ValueError(f"expected NAME==VERSION, got {requirement!r}")
    return name.strip(), version.strip()


def _sdist_filenames(name: str, version: str) -> set[str]:
    stems = {name, name.replace("-", "_"), name.lower(), name.lower().replace("-", "_")}
    return {f"{stem}-{version}.tar.gz" for stem in stems}


def download_sdist(requirement: str, dest_dir: Path | None = None) -> Path:
    """Path of the .tar.gz for NAME==VERSION, downloaded once into the kit cache (sha256-checked)."""
    name, version = _split_requirement(requirement)
    dest_dir = dest_dir or cache_dir() / "sdists"
    dest_dir.mkdir(parents=True, exist_ok=True)
    wanted = _sdist_filenames(name, version)
    try:
        request = urllib.request.Request(PYPI_SIMPLE.format(name=name), headers={"Accept": SIMPLE_JSON})
        with urllib.request.urlopen(request, timeout=60) as resp:
            files = json.load(resp)["files"]
    except OSError as exc:
        cached = [dest_dir / f for f in sorted(wanted) if (dest_dir / f).is_file()]
        if cached:
            return cached[0]
        raise KitError(f"cannot reach PyPI for {requirement} ({exc}). Fix: check the network or "
                       f"put {sorted(wanted)[0]} in {dest_dir}.") from exc
    matches = [f for f in files if f["filename"] in wanted]
    if not matches:
        raise KitError(f"PyPI has no source distribution of {requirement}")
    info = matches[0]
    sha256 = info["hashes"]["sha256"]
    target = dest_dir / info["filename"]
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    with tempfile.NamedTemporaryFile(dir=dest_dir, delete=False) as tmp:
        with urllib.request.urlopen(info["url"], timeout=300) as resp:
            shutil.copyfileobj(resp, tmp)
    tmp_path = Path(tmp.name)
    digest = hashlib.sha256(tmp_path.read_bytes()).hexdigest()
    if digest != sha256:
        tmp_path.unlink()
        raise KitError(f"{info['filename']}: sha256 {digest} does not match PyPI's {sha256}")
    tmp_path.replace(target)
    return target


def unpack_sdist(archive: Path, dest: Path) -> Path:
    """Unpack an sdist into dest (which must not exist), dropping the generated metadata."""
    if dest.exists():
        raise KitError(f"{dest} already exists")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (top,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        for generated in [top / "PKG-INFO", *top.glob("*.egg-info")]:
            if generated.is_dir():
                shutil.rmtree(generated)
            elif generated.exists():
                generated.unlink()
        top.rename(dest)
    return dest
