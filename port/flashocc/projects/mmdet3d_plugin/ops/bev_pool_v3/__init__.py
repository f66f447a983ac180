# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""bev_pool_v3: the view transformer's voxel pooling, on every device.

The kernel follows the tensors: DrivingSDK's ``mx_driving.bev_pool_v3`` for
NPU tensors, upstream's compiled bev_pool_v2 for CUDA tensors when that
extension is built, the portable PyTorch scatter-add otherwise.
``FLASHOCC_BEV_POOL=portable`` forces the portable one (debugging, parity).

Contract (DrivingSDK's, checked by .contract on every device): depth
(B, N, D, fH, fW), feat (B, N, fH, fW, C), int ranks of equal length in any
order, bev_feat_shape (B, Dz, Dy, Dx, C); returns float32 (B, C, Dz, Dy, Dx).
depth=None is bev_pool v1 mode: ranks_bev (N, 4) of (h, w, d, b), point i
pools row i of feat viewed as (-1, C). On the NPU, C must also be a multiple
of 8 and at most 360 (DrivingSDK's documented limits).
"""
import os
from typing import Optional, Sequence

import torch

from .contract import check_npu_limits, check_v2, check_v3
from .portable import (
    BEVPoolV2Portable,
    BEVPoolV3Portable,
    bev_pool_portable,
    bev_pool_v2_portable,
    bev_pool_v3_portable,
    empty_result,
    flatten_v1_ranks,
)
from .reference import (
    bev_pool_brute_force,
    bev_pool_brute_force_grads,
    bev_pool_v2_sorted,
    bev_pool_v3_sorted,
    sort_into_intervals,
)

__all__ = ['bev_pool_v3', 'implementation_for', 'bev_pool_v3_portable', 'BEVPoolV3Portable',
           'bev_pool_v2_portable', 'BEVPoolV2Portable', 'bev_pool_portable', 'check_v3', 'check_v2',
           'check_npu_limits', 'flatten_v1_ranks', 'sort_into_intervals', 'bev_pool_v2_sorted',
           'bev_pool_v3_sorted', 'bev_pool_brute_force', 'bev_pool_brute_force_grads']

IMPLEMENTATION_ENV = 'FLASHOCC_BEV_POOL'
MX_DRIVING_MISSING = ('bev_pool_v3 on NPU needs DrivingSDK: `pip install mx-driving` (26.2.0.post1 for torch 2.1, '
                      '26.2.0.post2 for torch 2.6-2.8) or build it from https://gitee.com/ascend/DrivingSDK; '
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


def bev_pool_v3(depth: Optional[torch.Tensor], feat: torch.Tensor, ranks_depth: Optional[torch.Tensor],
                ranks_feat: Optional[torch.Tensor], ranks_bev: torch.Tensor,
                bev_feat_shape: Sequence[int]) -> torch.Tensor:
    """Pool frustum features into the BEV grid; returns float32 (B, C, Dz, Dy, Dx)."""
    shape = check_v3(depth, feat, ranks_depth, ranks_feat, ranks_bev, bev_feat_shape)
    if ranks_bev.numel() == 0:
        return empty_result(depth, feat, shape)
    implementation = implementation_for(feat)
    if implementation == 'mx_driving':
        check_npu_limits('bev_pool_v3', shape, ranks_bev.shape[0])
        try:
            import mx_driving
        except ImportError as exc:
            raise RuntimeError(MX_DRIVING_MISSING) from exc
        if depth is None:
            return mx_driving.bev_pool_v3(None, feat.float().contiguous(), None, None, ranks_bev.int(),
                                          list(shape))
        return mx_driving.bev_pool_v3(depth.float().contiguous(), feat.float().contiguous(), ranks_depth.int(),
                                      ranks_feat.int(), ranks_bev.int(), list(shape))
    if implementation == 'cuda_ext' and depth is not None:  # upstream's CUDA op has no v1 mode
        from ..bev_pool_v2.bev_pool import bev_pool_v2
        rb, rd, rf, starts, lengths = sort_into_intervals(ranks_bev, ranks_depth, ranks_feat)
        return bev_pool_v2(depth, feat, rd, rf, rb, shape, starts, lengths)
    return bev_pool_v3_portable(depth, feat, ranks_depth, ranks_feat, ranks_bev, shape)
