"""The kit's emulated torch_npu: an Ascend NPU ("npu", PrivateUse1) rehearsed on the CPU.

Not Huawei's package: see tools/npu_emulator. Tensors on "npu" live in host memory and run the
CPU kernels; the API follows torch_npu where the kit, mmcv and DrivingSDK's Python layer reach it.
"""

import torch

from npu_emulator.runtime import extension

_C = extension()

from .version import __version__ as __version__  # noqa: E402  (the stack's torch-npu, marked emulated)

torch.utils.rename_privateuse1_backend("npu")

from . import npu  # noqa: E402

torch._register_device_module("npu", npu)
# torch 2.1 asks the module for these when it generates the methods
torch.utils.generate_methods_for_privateuse1_backend(for_tensor=True, for_module=True, for_storage=True)
_REGISTRATIONS = _C.late_registrations()
_C.register_hooks()

from . import contrib, distributed, optim, profiler, utils  # noqa: E402,F401

distributed._register_hccl()

# torch.utils.checkpoint keeps the RNG state of this device type (as torch_npu sets it)
try:
    from torch.utils.checkpoint import DefaultDeviceType

    DefaultDeviceType.set_device_type("npu")
except ImportError:  # pragma: no cover - older torch
    pass

EMULATED = True  # real torch_npu has no such attribute: how code can tell the rehearsal


def __getattr__(name: str):
    """torch_npu's custom ops (npu_*) exist, as on an NPU, but raise when called: none is emulated."""
    if name.startswith("npu_"):
        def not_emulated(*args, **kwargs):
            raise NotImplementedError(f"torch_npu.{name} is not emulated by the kit's NPU rehearsal")

        not_emulated.__name__ = name
        return not_emulated
    raise AttributeError(f"module 'torch_npu' has no attribute {name!r}")
