# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""Which accelerator this process trains on, decided once: npu, cuda or cpu.

The same patched tree runs on Ascend NPUs, on CUDA GPUs and on plain CPUs.
Everything device-specific (torch_npu's CUDA-to-NPU shim, the distributed
backend, the fused optimizer, DrivingSDK's run-time patches) is chosen here,
and nowhere else.

``FLASHOCC_DEVICE=npu|cuda|cpu`` forces a device (debugging; with ``cpu`` on
a GPU host also hide the GPUs: ``CUDA_VISIBLE_DEVICES=``).

This module imports only torch at import time; torch_npu, mx_driving and
mmcv are imported lazily, and only when they are installed.
"""
import functools
import importlib
import importlib.util
import logging
import os
from typing import Optional

import torch

DEVICE_ENV = 'FLASHOCC_DEVICE'
DEVICES = ('npu', 'cuda', 'cpu')
DIST_BACKENDS = {'npu': 'hccl', 'cuda': 'nccl', 'cpu': 'gloo'}
# Configs say AdamW; on the NPU torch_npu's fused kernel does the same maths.
NPU_OPTIMIZERS = {'AdamW': 'NpuFusedAdamW'}

logger = logging.getLogger(__name__)


def is_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _npu_visible() -> bool:
    if not is_installed('torch_npu'):
        return False
    import torch_npu  # noqa: F401  (registers torch.npu)
    return bool(torch.npu.is_available())


@functools.lru_cache(maxsize=None)
def device_type() -> str:
    """'npu', 'cuda' or 'cpu' for this process (cached: decided once)."""
    forced = os.environ.get(DEVICE_ENV, '').strip().lower()
    if forced and forced not in DEVICES:
        raise ValueError(f'{DEVICE_ENV}={forced!r}: choose one of '
                         f'{", ".join(DEVICES)} (or unset it)')
    if forced == 'npu' and not _npu_visible():
        raise RuntimeError(f'{DEVICE_ENV}=npu but no NPU is usable: install '
                           'torch_npu and source the CANN set_env.sh')
    if forced == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'{DEVICE_ENV}=cuda but torch sees no CUDA device')
    if forced:
        chosen = forced
    elif _npu_visible():
        chosen = 'npu'
    elif torch.cuda.is_available():
        chosen = 'cuda'
    else:
        chosen = 'cpu'
    if chosen == 'npu':
        # Redirects the remaining torch.cuda calls of upstream code to the NPU.
        importlib.import_module('torch_npu.contrib.transfer_to_npu')
    return chosen


def dist_backend() -> str:
    """Collective backend for torch.distributed on this device."""
    return DIST_BACKENDS[device_type()]


def local_rank() -> int:
    """This process's index on its node (torchrun sets LOCAL_RANK)."""
    return int(os.environ.get('LOCAL_RANK', 0))


def set_local_device() -> None:
    """Bind this process to its accelerator; a no-op on CPU."""
    device = device_type()
    if device == 'npu':
        torch.npu.set_device(local_rank())
    elif device == 'cuda':
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())


def init_distributed(**kwargs) -> None:
    """Join the process group torchrun describes (env://) on this device.

    Uses LOCAL_RANK (correct on multi-node runs) rather than mmcv's
    RANK % device_count, and the backend of the device actually in use.
    """
    set_local_device()
    torch.distributed.init_process_group(backend=dist_backend(), **kwargs)


def adapt_optimizer(optimizer_cfg: dict) -> Optional[str]:
    """Swap a config's optimizer for its fused NPU twin on the NPU.

    Returns a message describing the switch (for the log), or None.
    """
    wanted = optimizer_cfg.get('type')
    fused = NPU_OPTIMIZERS.get(wanted)
    if device_type() != 'npu' or fused is None:
        return None
    optimizer_cfg['type'] = fused
    _register_npu_optimizer(fused)
    return f'optimizer {wanted} -> torch_npu {fused} (same hyper-parameters)'


def _register_npu_optimizer(name: str) -> None:
    """mmcv registers torch_npu's optimizers only if it saw an NPU at import."""
    import torch_npu
    try:
        from mmcv.runner.optimizer import OPTIMIZERS
    except ImportError:  # used without mmcv: there is no registry to fill
        return
    if name not in OPTIMIZERS.module_dict:
        OPTIMIZERS.register_module(module=getattr(torch_npu.optim, name))


def apply_driving_sdk_patches() -> str:
    """DrivingSDK's run-time patch for batched matmul (NPU with mx_driving).

    Returns a message for the log.
    """
    if device_type() != 'npu':
        return 'DrivingSDK patcher: not applied (not on an NPU)'
    if not is_installed('mx_driving'):
        return 'DrivingSDK patcher: not applied (mx_driving is not installed)'
    # The PatcherBuilder API exists in DrivingSDK 7.x and, kept for
    # compatibility, in the 26.x wheels on PyPI.
    from mx_driving.patcher import Patch, PatcherBuilder, batch_matmul
    PatcherBuilder().add_module_patch('torch', Patch(batch_matmul)).build().apply()
    return 'DrivingSDK patcher: batch_matmul applied'


def describe() -> str:
    """One line for the training log: where this process runs and how."""
    device = device_type()
    parts = [f'device {device}', f'dist backend {dist_backend()}',
             f'local rank {local_rank()}']
    if device == 'npu':
        parts.append('mx_driving ' + ('installed' if is_installed('mx_driving')
                                      else 'MISSING'))
    return ', '.join(parts)
