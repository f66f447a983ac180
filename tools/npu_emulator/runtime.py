"""Finds and loads the emulated NPU's extension for the emulated torch_npu (once per process)."""

from __future__ import annotations

import os
from types import ModuleType

from . import ENV_EXTENSION

_extension: ModuleType | None = None


class EmulatorNotPrepared(ImportError):
    """The extension was not built for this environment."""


def extension() -> ModuleType:
    """The loaded C++ extension (its path comes from FLASHOCC_NPU_EMULATOR_EXTENSION)."""
    global _extension
    if _extension is None:
        from .build import load_extension

        path = os.environ.get(ENV_EXTENSION, "")
        if not path or not os.path.isfile(path):
            raise EmulatorNotPrepared(
                f"the emulated NPU's extension is not built here ({ENV_EXTENSION}={path!r}); run "
                "`python -m npu_emulator.install` with this environment's Python (tools/ on sys.path)")
        _extension = load_extension(path)
    return _extension
