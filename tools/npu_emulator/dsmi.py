"""The stub ``libdrvdsmi_host.so`` DrivingSDK's ``get_chip_info`` loads (so its chip query succeeds quietly)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from . import ENV_EXTENSION, PACKAGE_DIR

LIBRARY = "libdrvdsmi_host.so"
SOURCE = PACKAGE_DIR / "csrc" / "dsmi_stub.c"


def build_stub(directory: Path) -> Path:
    """Compiles the stub into directory (once)."""
    library = directory / "dsmi" / LIBRARY
    if library.is_file():
        return library
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc/gcc) to build the emulator's libdrvdsmi_host.so stub")
    library.parent.mkdir(parents=True, exist_ok=True)
    partial = library.with_suffix(".so.partial")
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SOURCE)], check=True,
                   capture_output=True, text=True)
    partial.replace(library)
    return library


def expose_stub() -> None:
    """Puts the stub's directory on LD_LIBRARY_PATH, where get_chip_info looks (built beside the extension)."""
    extension = os.environ.get(ENV_EXTENSION, "")
    if not extension:
        return
    try:
        library = build_stub(Path(extension).parent)
    except (OSError, RuntimeError, subprocess.CalledProcessError):
        return  # DrivingSDK then falls back to its default kernels, with its own warning
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if str(library.parent) not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([*paths, str(library.parent)])
