"""The smoke set, generated once per machine: a copy kept in the kit's cache, keyed by what determines its bytes
(the generator's sources, its options and the path prefix the infos carry). A fresh clone or workspace copies it
(about a second for the smoke set's 96 MB) instead of rendering it again (about 90 s on a 2-core machine)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import KitError
from ..pins import cache_dir
from . import target
from .options import SynthOptions

SYNTH_SOURCES = Path(__file__).resolve().parent


def cache_key(opts: SynthOptions, prefix: str) -> str:
    """What the bytes depend on: the options, the prefix, the generator's sources, and the numpy and OpenCV that
    compute and encode them (two cells' stacks may render the same options differently)."""
    import cv2
    import numpy

    versions = {"numpy": numpy.__version__, "cv2": cv2.__version__}
    digest = hashlib.sha256(json.dumps([opts.parameters(), prefix, versions], sort_keys=True).encode())
    for source in sorted(SYNTH_SOURCES.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:20]


def cached_set(opts: SynthOptions, prefix: str) -> Path:
    return cache_dir() / "synthetic" / cache_key(opts, prefix)


def copy_into_place(source: Path, root: Path) -> None:
    """source's set at root, whole or not at all (staged next to root, then renamed)."""
    staging = target.stage(root)
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        target.commit(staging, root, overwrite=False)
    except BaseException:
        target.discard(staging)
        raise


def generate_or_copy(opts: SynthOptions, root: Path, prefix: str, log: Callable[[str], None] = print) -> None:
    """The set at root: from the cache where this machine generated it before, otherwise generated and then kept.
    The cache is only ever a copy: the set at root is written as `generate` writes it."""
    from .generate import generate

    cached = cached_set(opts, prefix)
    if (cached / target.MARKER).is_file():
        log(f"copying the synthetic smoke set from the kit's cache ({cached})")
        copy_into_place(cached, root)
        return
    log(f"generating the synthetic smoke set in {root} ({opts.parameters()})")
    generate(opts, root, prefix)
    try:
        copy_into_place(root, cached)
    except (OSError, KitError) as exc:  # a full or read-only cache costs the next clone 90 s, no more
        log(f"note: the smoke set was not kept in {cached.parent} ({exc})")
