# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""dvr: the ray caster of RayIoU and RayPQ, on every device.

``ray_caster()`` picks the implementation once per process: upstream's CUDA
extension (``lib/dvr``, built with torch's cpp_extension on first use) when
this process runs on CUDA and it builds, the portable PyTorch op otherwise.
``FLASHOCC_DVR=portable`` forces the portable one, ``FLASHOCC_DVR=cuda``
refuses anything but the extension. Both take the CUDA op's arguments and
return the same results (``reference.py`` is the kernel, line by line).

The portable op computes in float64, as the kernel does; on an NPU, where
float64 is emulated, it runs on the host CPU (``caster.device``).
"""
import os
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from .portable import render_forward as render_forward_portable

__all__ = ['RayCaster', 'ray_caster', 'render_forward_portable']

# The FlashOCC checkout: projects/mmdet3d_plugin/ops/dvr/__init__.py -> root
_FLASHOCC_ROOT = Path(__file__).resolve().parents[4]
_CHOICES = ('auto', 'portable', 'cuda')


class RayCaster(NamedTuple):
    render_forward: Callable
    device: str  # where the caster's four input tensors must be
    name: str  # for the log: which implementation evaluates the rays


_chosen: Optional[RayCaster] = None


def _build_cuda_extension():
    from torch.utils.cpp_extension import load
    sources = [str(_FLASHOCC_ROOT / 'lib' / 'dvr' / name) for name in ('dvr.cpp', 'dvr.cu')]
    return load('dvr', sources=sources, verbose=True, extra_cuda_cflags=['-allow-unsupported-compiler'])


def ray_caster() -> RayCaster:
    """The ray caster for this process (see the module docstring)."""
    global _chosen
    if _chosen is None:
        _chosen = _choose()
    return _chosen


def _choose() -> RayCaster:
    from ....device import device_type
    wanted = os.environ.get('FLASHOCC_DVR', 'auto')
    if wanted not in _CHOICES:
        raise ValueError(f'FLASHOCC_DVR={wanted!r}: expected one of {", ".join(_CHOICES)}')
    portable = RayCaster(render_forward_portable, 'cpu',
                         'the portable PyTorch op (projects/mmdet3d_plugin/ops/dvr) on the CPU')
    if wanted == 'portable':
        return portable
    if device_type() != 'cuda':
        if wanted == 'cuda':
            raise RuntimeError(f'FLASHOCC_DVR=cuda: the dvr extension needs CUDA, and this process runs on '
                               f'{device_type()}; unset FLASHOCC_DVR to use the portable op')
        return portable
    try:
        extension = _build_cuda_extension()
    except Exception as exc:  # no nvcc, a compiler mismatch: the portable op gives the same results
        if wanted == 'cuda':
            raise
        warnings.warn(f'the CUDA ray caster lib/dvr did not build ({type(exc).__name__}: {exc}); '
                      f'RayIoU uses the portable op, with the same results, on the CPU', stacklevel=2)
        return portable
    return RayCaster(extension.render_forward, 'cuda', 'the CUDA extension lib/dvr')
