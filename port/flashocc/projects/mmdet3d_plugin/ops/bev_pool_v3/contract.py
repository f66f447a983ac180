# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""DrivingSDK's argument contract for its BEV pooling ops, checked alike on every device.

``check_v3`` and ``check_v2`` refuse what ``mx_driving.bev_pool_v3`` and
``bev_pool_v2`` cannot pool, before any kernel runs, with DrivingSDK's own
error type and message where it has one. ``check_npu_limits`` holds the
limits DrivingSDK documents for its NPU kernels (docs/zh/api/context/
bev_pool_v*.md); the portable ops have none of them.
"""
from typing import Optional, Sequence, Tuple

import torch

BevShape = Tuple[int, int, int, int, int]

# mx_driving.bev_pool_v3's own message, word for word (its test compares the string).
V1_RANKS_NOT_2D = 'ranks_bev must be 2D when running without depth'
# mx_driving.bev_pool's own message.
V1_COUNTS_DIFFER = 'The number of features and geometry features should be the same.'

# op -> (C must be a multiple of, largest C, largest N_RANKS); B*D*H*W*C <= 2^31 for all three.
NPU_LIMITS = {
    'bev_pool': (1, 1024, None),
    'bev_pool_v2': (1, 1024, 2 ** 21),
    'bev_pool_v3': (8, 360, None),
}
MAX_OUTPUT_ELEMENTS = 2 ** 31


def bev_shape(bev_feat_shape: Sequence[int]) -> BevShape:
    """bev_feat_shape as five positive ints (B, D, H, W, C)."""
    shape = tuple(int(v) for v in bev_feat_shape)
    if len(shape) != 5 or min(shape) <= 0:
        raise ValueError(f'bev_feat_shape must be five positive sizes (B, D, H, W, C), got {tuple(bev_feat_shape)}. '
                         'Fix: pass [B, Dz, Dy, Dx, C] of the BEV grid')
    return shape  # type: ignore[return-value]


def _check_floating(name: str, tensor: torch.Tensor) -> None:
    if not tensor.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor, got {tensor.dtype}. '
                        f'Fix: pass {name}.float()')


def _check_ranks(name: str, ranks: Optional[torch.Tensor], dims: int) -> torch.Tensor:
    if ranks is None:
        raise ValueError(f'{name} is None, but the op needs it when depth is given. '
                         'Fix: pass the ranks from the prepare step (None is for bev_pool v1 mode, depth=None)')
    if ranks.is_floating_point() or ranks.is_complex() or ranks.dtype == torch.bool:
        raise TypeError(f'{name} must hold integer indices, got {ranks.dtype}. Fix: pass {name}.int()')
    if ranks.dim() != dims:
        raise ValueError(f'{name} must be {dims}-D, got shape {tuple(ranks.shape)}. '
                         'Fix: one rank per point' + ('' if dims == 1 else ', (h, w, d, b) each'))
    return ranks


def check_v3(depth: Optional[torch.Tensor], feat: torch.Tensor, ranks_depth: Optional[torch.Tensor],
             ranks_feat: Optional[torch.Tensor], ranks_bev: torch.Tensor,
             bev_feat_shape: Sequence[int]) -> BevShape:
    """Checks bev_pool_v3's arguments; returns (B, D, H, W, C).

    With depth: feat (..., C), three 1-D rank tensors of one length. Without
    (bev_pool v1 mode): ranks_bev (N, 4) of (h, w, d, b), feat's dim 1 is C
    and point i takes row i of feat viewed as (-1, C), so feat needs at least
    N rows; ranks_depth and ranks_feat are not used.
    """
    shape = bev_shape(bev_feat_shape)
    C = shape[4]
    _check_floating('feat', feat)
    if depth is None:
        if ranks_bev.dim() != 2:
            raise ValueError(V1_RANKS_NOT_2D)
        _check_ranks('ranks_bev', ranks_bev, 2)
        if ranks_bev.shape[1] != 4:
            raise ValueError(f'ranks_bev without depth holds (h, w, d, b) per point, so shape (N, 4); got '
                             f'{tuple(ranks_bev.shape)}. Fix: stack the four grid coordinates per point')
        if feat.dim() < 2 or feat.shape[1] != C:
            raise ValueError(f'without depth, feat\'s dim 1 is the channel count and must equal bev_feat_shape\'s '
                             f'C={C}; feat has shape {tuple(feat.shape)}. Fix: pass feat as (N, C)')
        rows, points = feat.numel() // C, ranks_bev.shape[0]
        if rows < points:
            raise ValueError(f'without depth, point i pools row i of feat: {points} points, but feat has {rows} '
                             f'rows of C={C}. Fix: one feature row per point of ranks_bev')
        return shape
    _check_floating('depth', depth)
    if feat.dim() == 0 or feat.shape[-1] != C:
        raise ValueError(f'feat\'s last dim is the channel count and must equal bev_feat_shape\'s C={C}; feat has '
                         f'shape {tuple(feat.shape)}. Fix: pass feat as (B, N, fH, fW, C)')
    lengths = {name: _check_ranks(name, ranks, 1).shape[0] for name, ranks in
               (('ranks_depth', ranks_depth), ('ranks_feat', ranks_feat), ('ranks_bev', ranks_bev))}
    if len(set(lengths.values())) != 1:
        raise ValueError(f'the three rank tensors must have one length (one entry per point), got {lengths}. '
                         'Fix: select the same points from all three')
    return shape


def check_v2(depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor, ranks_feat: torch.Tensor,
             ranks_bev: torch.Tensor, bev_feat_shape: Sequence[int], interval_starts: torch.Tensor,
             interval_lengths: torch.Tensor) -> BevShape:
    """Checks bev_pool_v2's arguments (bev_pool_v3's with depth, plus the intervals); returns (B, D, H, W, C)."""
    shape = check_v3(depth, feat, ranks_depth, ranks_feat, ranks_bev, bev_feat_shape)
    starts = _check_ranks('interval_starts', interval_starts, 1)
    lengths = _check_ranks('interval_lengths', interval_lengths, 1)
    if starts.shape[0] != lengths.shape[0]:
        raise ValueError(f'interval_starts and interval_lengths must have same size, got {starts.shape[0]} and '
                         f'{lengths.shape[0]}. Fix: one start and one length per interval')
    return shape


def check_npu_limits(op: str, shape: BevShape, n_ranks: int) -> None:
    """Refuses what DrivingSDK documents its NPU kernel for ``op`` cannot do, before the kernel runs."""
    multiple, max_c, max_ranks = NPU_LIMITS[op]
    B, D, H, W, C = shape
    # only bev_pool_v3 reads FLASHOCC_BEV_POOL; v1 and v2 go to DrivingSDK whenever the tensors are on the NPU
    portable = ', or set FLASHOCC_BEV_POOL=portable (no such limit)' if op == 'bev_pool_v3' else ''
    if C % multiple or max_c < C:
        need = f'a multiple of {multiple} and at most {max_c}' if multiple > 1 else f'at most {max_c}'
        raise ValueError(f'mx_driving.{op} on the NPU needs the channel count C {need}, got C={C}. '
                         f'Fix: give the view transformer\'s output channels such a C{portable}')
    if B * D * H * W * C > MAX_OUTPUT_ELEMENTS:
        raise ValueError(f'mx_driving.{op} on the NPU needs B*D*H*W*C <= 2^31, got {B}*{D}*{H}*{W}*{C} = '
                         f'{B * D * H * W * C}. Fix: a smaller batch, grid or C{portable}')
    if max_ranks is not None and n_ranks > max_ranks:
        raise ValueError(f'mx_driving.{op} on the NPU needs at most 2^21 ranks, got {n_ranks}. '
                         'Fix: use bev_pool_v3 (no such limit)')
