"""Turns the NPU emulation on at interpreter start when FLASHOCC_EMULATE_NPU=1 (run from a .pth file).

With the flag unset this module changes nothing. With it set, ``site/`` (the emulated torch_npu)
and the mx-driving install directory go to the front of sys.path, and a ``sys.meta_path`` finder
serves ``mx_driving._C`` from :mod:`npu_emulator.kernels` (the wheel's own ``_C`` needs CANN).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import ENV_EXTENSION, ENV_MX_DRIVING, SITE_DIR, TOOLS_DIR, enabled


def activate(extension: str | os.PathLike | None = None, mx_driving_dir: str | os.PathLike | None = None) -> None:
    """Emulate the NPU in this process (and in its children, through the environment)."""
    from .finder import install_finder

    if extension is not None:
        os.environ[ENV_EXTENSION] = str(extension)
    if mx_driving_dir is not None:
        os.environ[ENV_MX_DRIVING] = str(mx_driving_dir)
    paths = [str(SITE_DIR)]
    target = os.environ.get(ENV_MX_DRIVING, "")
    if target:
        paths.append(target)
    for path in reversed(paths):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    # children (spawned DDP workers, subprocesses) find the kit's package and the emulated torch_npu
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for path in [str(TOOLS_DIR), *paths]:
        if path not in pythonpath:
            pythonpath.append(path)
    os.environ["PYTHONPATH"] = os.pathsep.join(pythonpath)
    install_finder()


def on_start(config: str | os.PathLike) -> None:
    """The .pth hook: activate with the paths ``install.prepare`` recorded, if the flag is set."""
    if not enabled():
        return
    try:
        settings = json.loads(Path(config).read_text())
    except (OSError, ValueError) as exc:
        print(f"FLASHOCC_EMULATE_NPU=1 but the emulator's settings {config} do not load ({exc}); "
              "run `python -m npu_emulator.install` again", file=sys.stderr)
        return
    activate(os.environ.get(ENV_EXTENSION) or _current_build(settings.get("extension")),
             os.environ.get(ENV_MX_DRIVING) or settings.get("mx_driving_dir"))


def _current_build(recorded: str | None) -> str | None:
    """The build of the emulator's present sources if the cache has it, else the recorded one (with a hint)."""
    if not recorded:
        return recorded
    try:
        from importlib.metadata import version

        from .build import built_library, extension_key

        current = Path(recorded).parent.parent / extension_key(version("torch"))
        library = built_library(current) if current.is_dir() else None
    except Exception:  # a start-up hook must not break the interpreter
        return recorded
    if library is not None:
        return str(library)
    if Path(recorded).parent != current:
        print("FLASHOCC_EMULATE_NPU=1: the NPU emulator's sources changed since it was built here; using the old "
              "build. Rebuild: PYTHONPATH=tools python -m npu_emulator.install", file=sys.stderr)
    return recorded
