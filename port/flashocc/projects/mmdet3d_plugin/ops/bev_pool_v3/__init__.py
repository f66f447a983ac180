# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""bev_pool_v3: the view transformer's voxel pooling, on every device.

The kernel follows the tensors: DrivingSDK's ``mx_driving.bev_pool_v3`` for
NPU tensors, upstream's compiled bev_pool_v2 for CUDA tensors when that
extension is built, the portable PyTorch scatter-add otherwise.
``FLASHOCC_BEV_POOL=portable`` forces the portable one (debugging, parity).

Contract (DrivingSDK's): depth (B, N, D, fH, fW), feat (B, N, fH, fW, C),
int ranks of equal length in any order, bev_feat_shape (B, Dz, Dy, Dx, C);
returns (B, C, Dz, Dy, Dx).
"""
import os
from typing import Sequence

import torch

from .portable import BEVPoolV3Portable, bev_pool_v3_portable, flatten_v1_ranks
from .reference import (
    bev_pool_brute_force,
    bev_pool_brute_force_grads,
    bev_pool_v2_sorted,
    bev_pool_v3_sorted,
    sort_into_intervals,
)

__all__ = ['bev_pool_v3', 'implementation_for', 'bev_pool_v3_portable', 'BEVPoolV3Portable',
           'flatten_v1_ranks', 'sort_into_intervals', 'bev_pool_v2_sorted', 'bev_pool_v3_sorted',
           'bev_pool_brute_force', 'bev_pool_brute_force_grads']

IMPLEMENTATION_ENV = 'FLASHOCC_BEV_POOL'
MX_DRIVING_MISSING = ('bev_pool_v3 on NPU needs DrivingSDK: `pip install mx-driving` (torch 2.6-2.8) '
                      'or build it from https://gitee.com/ascend/DrivingSDK; '
                      f'{IMPLEMENTATION_ENV}=portable runs the slower PyTorch version instead')


def compiled_v2_available() -> bool:
    from ..bev_pool_v2 import bev_pool as v2
    return v2.bev_pool_v2_ext is not None


def implementation_for(tensor: torch.Tensor) -> str:
    """'mx_driving', 'cuda_ext' or 'portable' for tensors on this tensor's device."""
    forced = os.environ.get(IMPLEMENTATION_ENV, '').strip().lower()
    if forced not in ('', 'auto', 'portable'):
        raise ValueError(f'{IMPLEMENTATION_ENV}={forced!r}: use "portable" or leave it unset')
    if forced == 'portable':
        return 'portable'
    if tensor.device.type == 'npu':
        return 'mx_driving'
    if tensor.device.type == 'cuda' and compiled_v2_available():
        return 'cuda_ext'
    return 'portable'


def _empty_result(depth: torch.Tensor, feat: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """No point fell inside the grid: zeros, still connected to the graph (zero gradients)."""
    B, D, H, W, C = (int(v) for v in shape)
    return feat.new_zeros(B, C, D, H, W) + 0 * (depth.sum() + feat.sum())


def bev_pool_v3(depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor,
                ranks_feat: torch.Tensor, ranks_bev: torch.Tensor,
                bev_feat_shape: Sequence[int]) -> torch.Tensor:
    """Pool frustum features into the BEV grid; returns (B, C, Dz, Dy, Dx)."""
    if ranks_bev.numel() == 0:
        return _empty_result(depth, feat, bev_feat_shape)
    depth, feat = depth.float(), feat.float()  # every kernel computes in float32
    implementation = implementation_for(feat)
    if implementation == 'mx_driving':
        try:
            import mx_driving
        except ImportError as exc:
            raise RuntimeError(MX_DRIVING_MISSING) from exc
        return mx_driving.bev_pool_v3(depth.contiguous(), feat.contiguous(), ranks_depth.int(),
                                      ranks_feat.int(), ranks_bev.int(), list(bev_feat_shape))
    if implementation == 'cuda_ext':
        from ..bev_pool_v2.bev_pool import bev_pool_v2
        rb, rd, rf, starts, lengths = sort_into_intervals(ranks_bev, ranks_depth, ranks_feat)
        return bev_pool_v2(depth, feat, rd, rf, rb, bev_feat_shape, starts, lengths)
    return bev_pool_v3_portable(depth, feat, ranks_depth, ranks_feat, ranks_bev, bev_feat_shape)
