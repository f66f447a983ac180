"""FlashOCC's config files as mmcv reads them (their _base_ files included), for the kit's own processes.

The launcher reads configs but trains nothing. `import mmcv` imports torch, 2 of the launcher's 3 seconds of start-up
on every run, unless torch cannot be imported: mmcv.utils then leaves out its torch half, and Config does not need
it. So where neither is imported yet, mmcv is imported with torch hidden, and forgotten after the read, so that a
later `import mmcv` in the same process gets all of it.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import KitError


def _is_mmcv(name: str) -> bool:
    return name == "mmcv" or name.startswith("mmcv.")


@contextmanager
def _config_class():
    if "mmcv" in sys.modules or "torch" in sys.modules:  # already paid for: the whole of mmcv
        from mmcv import Config

        yield Config
        return
    sys.modules["torch"] = None  # `import torch` raises ImportError while this stands
    try:
        from mmcv import Config
    finally:
        del sys.modules["torch"]
    try:
        yield Config
    finally:
        for name in [name for name in sys.modules if _is_mmcv(name)]:
            del sys.modules[name]


def load(flashocc: Path, config: str):
    """mmcv's Config of flashocc/config; a config that does not load is the user's to fix: KitError naming it."""
    path = flashocc / config
    cwd = os.getcwd()
    with _config_class() as config_class:
        try:
            os.chdir(flashocc)  # FlashOCC's configs name their _base_ files relative to its root
            return config_class.fromfile(str(path))
        except Exception as exc:  # noqa: BLE001 (a broken config: say which and why)
            raise KitError(f"cannot read the config {path}: {type(exc).__name__}: {exc}") from None
        finally:
            os.chdir(cwd)
