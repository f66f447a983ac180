"""torch_npu.npu.amp: autocast on the emulated npu (float16 convolutions and matmuls, as on CUDA)."""

from __future__ import annotations

import torch

__all__ = ["autocast", "custom_fwd", "custom_bwd"]


class autocast(torch.amp.autocast_mode.autocast):
    """torch.autocast("npu", ...) with torch.cuda.amp.autocast's signature."""

    def __init__(self, enabled: bool = True, dtype: torch.dtype = torch.float16, cache_enabled: bool = True):
        super().__init__("npu", enabled=enabled, dtype=dtype, cache_enabled=cache_enabled)


def custom_fwd(fwd=None, *, cast_inputs=None):
    """Decorator kept for API compatibility: runs the forward as it is."""
    if fwd is None:
        return lambda f: f
    return fwd


def custom_bwd(bwd):
    return bwd
