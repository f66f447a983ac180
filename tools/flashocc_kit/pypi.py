"""Files from PyPI (sdists, wheels), verified by sha256 and cached, without pip or torch.

`pip download` of mmdet/mmcv sdists runs their setup.py, which imports torch; reading PyPI's
simple JSON index and fetching the archive directly needs neither. Wheels are fetched for any
platform, to read their Python sources (torch_npu and mx_driving cannot be imported here).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
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


@functools.lru_cache(maxsize=None)
def index_files(name: str) -> list[dict]:
    """The files PyPI's simple JSON index lists for a project (filename, requires-python, yanked, hashes),
    cached in the kit cache; an unreachable PyPI with a cached copy gives the copy."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    cached = cache_dir() / "pypi-index" / f"{key}.json"
    try:
        request = urllib.request.Request(PYPI_SIMPLE.format(name=key), headers={"Accept": SIMPLE_JSON})
        with urllib.request.urlopen(request, timeout=60) as resp:
            data = resp.read()
    except OSError as exc:
        if cached.is_file():
            return json.loads(cached.read_text())["files"]
        raise KitError(f"cannot reach PyPI's index for {name} ({exc}) and nothing is cached") from exc
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(data)
    return json.loads(data)["files"]


def download_sdist(requirement: str, dest_dir: Path | None = None) -> Path:
    """Path of the .tar.gz for NAME==VERSION, downloaded once into the kit cache."""
    name, version = _split_requirement(requirement)
    wanted = _sdist_filenames(name, version)
    return _download(name, lambda filename: filename in wanted, dest_dir or cache_dir() / "sdists",
                     f"{requirement} (sdist)")


def download_wheel(requirement: str, tag: str = "cp311", machine: str = "x86_64",
                   dest_dir: Path | None = None) -> Path:
    """Path of a wheel of NAME==VERSION for a Python tag and machine (any OS rules: manylinux)."""
    name, version = _split_requirement(requirement)
    prefixes = {f"{stem}-{version}-" for stem in (name.replace("-", "_"), name.replace("-", "_").lower())}

    def wanted(filename: str) -> bool:
        return (filename.endswith(".whl") and any(filename.startswith(p) for p in prefixes)
                and f"-{tag}-" in filename and machine in filename)

    return _download(name, wanted, dest_dir or cache_dir() / "wheels-reference",
                     f"{requirement} ({tag}, {machine} wheel)")


def _download(name: str, wanted: Callable[[str], bool], dest_dir: Path, what: str) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        request = urllib.request.Request(PYPI_SIMPLE.format(name=name), headers={"Accept": SIMPLE_JSON})
        with urllib.request.urlopen(request, timeout=60) as resp:
            files = json.load(resp)["files"]
    except OSError as exc:
        cached = sorted(p for p in dest_dir.iterdir() if wanted(p.name))
        if cached:
            return cached[-1]
        raise KitError(f"cannot reach PyPI for {what} ({exc}). Fix: check the network, or put the "
                       f"file in {dest_dir}.") from exc
    matches = [f for f in files if wanted(f["filename"])]
    if not matches:
        raise KitError(f"PyPI has no file for {what}")
    info = matches[-1]
    sha256 = info["hashes"]["sha256"]
    target = dest_dir / info["filename"]
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    with tempfile.NamedTemporaryFile(dir=dest_dir, delete=False) as tmp, \
            urllib.request.urlopen(info["url"], timeout=600) as resp:
        shutil.copyfileobj(resp, tmp)
    tmp_path = Path(tmp.name)
    digest = hashlib.sha256(tmp_path.read_bytes()).hexdigest()
    if digest != sha256:
        tmp_path.unlink()
        raise KitError(f"{info['filename']}: sha256 {digest} does not match PyPI's {sha256}")
    tmp_path.chmod(0o644)
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
