"""Builds the emulated NPU's C++ extension once per source, torch, Python and machine, and loads it."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType

CSRC = Path(__file__).resolve().parent / "csrc"
NAME = "_npu_emulator_C"
CFLAGS = ["-O2", "-std=c++17", "-Wno-unused-parameter"]


def sources() -> list[Path]:
    return sorted(CSRC.glob("*.cpp"))


def extension_key(torch_version: str | None = None) -> str:
    """What a built extension depends on: its sources and flags, torch, Python and the machine."""
    if torch_version is None:
        import torch

        torch_version = torch.__version__
    digest = hashlib.sha256()
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join(CFLAGS).encode())
    py = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    return f"{digest.hexdigest()[:16]}-torch{torch_version.split('+')[0]}-{py}-{platform.machine()}"


def extension_dir(cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / "npu-emulator" / extension_key()


def built_library(directory: Path) -> Path | None:
    found = [p for p in directory.glob(f"{NAME}*.so") if p.is_file()]
    return found[0] if found else None


def build_extension(cache_dir: str | os.PathLike, verbose: bool = False) -> Path:
    """The extension's shared library, built into cache_dir/npu-emulator/<key> unless it is there already."""
    directory = extension_dir(cache_dir)
    library = built_library(directory)
    if library is not None:
        return library
    from torch.utils import cpp_extension

    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", "2")  # the kit's machines have few cores, shared
    started = time.monotonic()
    cpp_extension.load(name=NAME, sources=[str(p) for p in sources()], build_directory=str(directory),
                       extra_cflags=CFLAGS, verbose=verbose, is_python_module=True)
    library = built_library(directory)
    if library is None:
        raise RuntimeError(f"the NPU emulator's build left no {NAME}*.so in {directory}")
    (directory / "build-seconds.txt").write_text(f"{time.monotonic() - started:.1f}\n")
    return library


def load_extension(library: str | os.PathLike) -> ModuleType:
    """Imports the built extension from its path (torch first: the library links against it)."""
    import torch  # noqa: F401

    if NAME in sys.modules:
        return sys.modules[NAME]
    loader = importlib.machinery.ExtensionFileLoader(NAME, str(library))
    spec = importlib.util.spec_from_file_location(NAME, str(library), loader=loader)
    if spec is None:
        raise ImportError(f"cannot load the NPU emulator extension from {library}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    loader.exec_module(module)
    return module
