# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""Which accelerator this process trains on, decided once: npu, cuda or cpu.

The same patched tree runs on Ascend NPUs, on CUDA GPUs and on plain CPUs.
Everything device-specific (torch_npu's CUDA-to-NPU shim, the distributed
backend, the fused optimizer, DrivingSDK's run-time patches, pinned host
memory) is chosen here, and nowhere else.

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
# DrivingSDK's run-time patches, by precision, as the reference port's training applies them: batched
# matmul (LSS point transforms) and mmdet's ResNet blocks ending in npu_add_relu. For the fp16 backbone
# the port's own autocast (BEVDet.run_img_backbone: any device, any backbone) takes the place of
# DrivingSDK's resnet_fp16, which is the same autocast of mmdet's ResNet.forward; and, as in the
# reference's fp16 trainer, the add+relu fusion is left out there.
DRIVING_SDK_PATCHES = {'fp32': ('batch_matmul', 'resnet_add_relu'), 'fp16-backbone': ('batch_matmul',)}
# What each patch replaces: how the log tells an applied patch from a skipped one, with either API.
PATCH_TARGETS = {
    'batch_matmul': ('torch.matmul', 'torch.Tensor.matmul', 'torch.Tensor.__matmul__'),
    'resnet_add_relu': ('mmdet.models.backbones.resnet.BasicBlock.forward',
                        'mmdet.models.backbones.resnet.Bottleneck.forward'),
}

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


def device_count() -> int:
    """Accelerators this node has for the device in use (CPU: its cores)."""
    device = device_type()
    if device == 'npu':
        return int(torch.npu.device_count())
    if device == 'cuda':
        return torch.cuda.device_count()
    return os.cpu_count() or 1


def pin_memory() -> bool:
    """Page-locked host batches for the accelerator's copies; the CPU has none to make."""
    return device_type() in ('npu', 'cuda')


def _resolve(path: str):
    """The object a dotted path names (importing its root module), or None."""
    root, *attributes = path.split('.')
    try:
        obj = importlib.import_module(root)
        for name in attributes:
            obj = getattr(obj, name) if hasattr(obj, name) else importlib.import_module(f'{obj.__name__}.{name}')
    except (ImportError, AttributeError):
        return None
    return obj


def _apply_patcher(wanted) -> str:
    """Apply DrivingSDK's patches named in `wanted`, through whichever patcher API it has; returns the API's name."""
    import mx_driving.patcher as patcher
    if hasattr(patcher, 'BatchMatmul'):
        # the Patcher API: mx-driving 26.x wheels, DrivingSDK master since 2026-03
        from mx_driving.patcher import BatchMatmul, Patcher, ResNetAddRelu
        classes = {'batch_matmul': BatchMatmul, 'resnet_add_relu': ResNetAddRelu}
        Patcher().add(*[classes[name] for name in wanted]).apply()
        return 'Patcher'
    # PatcherBuilder, DrivingSDK's first patcher API (2025-02 on; the reference port uses it): its ResNet patch
    # takes mmdet's resnet module up to 2025-09 (when mx_driving.patcher.mmdet existed), the mmdet package since
    from mx_driving.patcher import Patch, PatcherBuilder, batch_matmul, resnet_add_relu
    functions = {'batch_matmul': batch_matmul, 'resnet_add_relu': resnet_add_relu}
    # a look for the old layout, not a use of it (the contract check holds what the port calls)
    resnet_module = 'mmdet.models.backbones.resnet' if is_installed('mx_driving.patcher.mmdet') else 'mmdet'
    modules = {'batch_matmul': 'torch', 'resnet_add_relu': resnet_module}
    builder = PatcherBuilder()
    for name in wanted:
        builder.add_module_patch(modules[name], Patch(functions[name]))
    with builder.build():  # entering, not .apply(): only the context turns NPU private formats off there
        pass
    return 'PatcherBuilder'


def apply_driving_sdk_patches(precision: str = 'fp32') -> str:
    """DrivingSDK's run-time patches the reference port trains under (NPU with mx_driving).

    Returns a line for the log: the patches applied, and each one skipped with the reason.
    """
    if precision not in DRIVING_SDK_PATCHES:
        raise ValueError(f'precision {precision!r}: choose one of {", ".join(DRIVING_SDK_PATCHES)}')
    if device_type() != 'npu':
        return 'DrivingSDK patches: none (not on an NPU)'
    if not is_installed('mx_driving'):
        return 'DrivingSDK patches: none (mx_driving is not installed: DrivingSDK ops and patches are missing)'
    wanted = DRIVING_SDK_PATCHES[precision]
    targets = {name: PATCH_TARGETS[name] for name in wanted}
    missing = {name: paths[0].split('.')[0] for name, paths in targets.items()
               if _resolve(paths[0].rsplit('.', 1)[0]) is None}
    before = {path: _resolve(path) for paths in targets.values() for path in paths}
    api = _apply_patcher([name for name in wanted if name not in missing])
    applied, skipped = [], []
    for name, paths in targets.items():
        if name in missing:
            skipped.append(f'{name} ({missing[name]} is not importable)')
        elif any(_resolve(path) is not before[path] for path in paths):
            applied.append(name)
        else:
            skipped.append(f'{name} (the patcher left {", ".join(paths)} unchanged)')
    line = f'DrivingSDK patches ({api} API, {precision}): applied {", ".join(applied) or "none"}'
    return line + (f'; skipped {"; ".join(skipped)}' if skipped else '')


def describe() -> str:
    """One line for the training log: where this process runs and how."""
    device = device_type()
    parts = [f'device {device}', f'dist backend {dist_backend()}',
             f'local rank {local_rank()}']
    if device == 'npu':
        parts.append('mx_driving ' + ('installed' if is_installed('mx_driving')
                                      else 'MISSING'))
    return ', '.join(parts)
