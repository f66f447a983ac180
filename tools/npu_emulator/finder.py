"""A sys.meta_path finder that serves DrivingSDK's compiled ``mx_driving._C`` from the emulated kernels.

The real wheel's Python files load unchanged; only the extension module (which needs CANN) is
replaced. Its chip query (``get_chip_info``: ``libdrvdsmi_host.so``) is answered by a stub library
the emulator builds, found through LD_LIBRARY_PATH as the real one is.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

TARGET = "mx_driving._C"


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        from .kernels import make_module

        return make_module(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        pass


class MxDrivingFinder(importlib.abc.MetaPathFinder):
    """Finds only ``mx_driving._C``; everything else is left to the usual finders."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), origin="npu_emulator.kernels")


def install_finder() -> None:
    if not any(isinstance(f, MxDrivingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MxDrivingFinder())
    from .dsmi import expose_stub

    expose_stub()
