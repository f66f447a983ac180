# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""DrivingSDK's three BEV pooling ops in plain PyTorch: scatter-adds, forward and backward.

Same contracts as ``mx_driving.bev_pool_v3``, ``bev_pool_v2`` and
``bev_pool`` (arguments checked by :mod:`.contract`, float32 results):

- v3: for every point i, ``out[ranks_bev[i]] += depth.flat[ranks_depth[i]]
  * feat_rows[ranks_feat[i]]``, in any order, so the ranks need no sorting
  and no intervals. With ``depth=None`` (bev_pool v1 mode) ``ranks_bev`` is
  (N, 4) of (h, w, d, b) and point i pools ``feat_rows[i]``.
- v2: every point of interval k goes to the cell of the interval's first
  point, ``ranks_bev[interval_starts[k]]``; points in no interval add
  nothing. The gradient, like upstream's CUDA op and DrivingSDK's, is taken
  point by point at each point's own ``ranks_bev`` over all points: the
  exact gradient for upstream's intervals (runs of one BEV cell).
- v1: feat (N, C) and geom_feat (N, 4) of (h, w, d, b), one row per point.

Runs wherever torch runs (CPU, and CUDA without upstream's compiled
extension). Memory: points are processed in chunks, and nothing of size
(n_points x C) is kept for backward: only the inputs and the int ranks.
"""
from typing import List, Optional, Sequence, Tuple

import torch

from .contract import V1_COUNTS_DIFFER, BevShape, check_v2, check_v3

# Points per chunk. On the CPU small enough for the (chunk x C) temporaries to stay in cache
# (2 MB at C=64: forward + backward 1.5-2x faster than with 64k-point chunks); on accelerators
# large enough to keep kernel launches few. No (n_points x C) tensor exists at any time.
CHUNK = 1 << 13
ACCELERATOR_CHUNK = 1 << 16


def chunk_size(device: torch.device) -> int:
    return CHUNK if device.type == 'cpu' else ACCELERATOR_CHUNK


def flatten_v1_ranks(coords: torch.Tensor, D: int, H: int, W: int) -> torch.Tensor:
    """bev_pool (v1) coordinates (h, w, d, b) per point -> flat BEV rank."""
    coords = coords.long()
    return coords[:, 3] * (D * H * W) + coords[:, 2] * (H * W) + coords[:, 0] * W + coords[:, 1]


def interval_points(interval_starts: torch.Tensor,
                    interval_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For every point an interval covers: its index, and the index of its interval's first point."""
    starts, lengths = interval_starts.long(), interval_lengths.long()
    owner = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
    run_start = torch.cumsum(lengths, 0) - lengths  # where each interval begins in `owner`
    first = starts.index_select(0, owner)
    return first + torch.arange(owner.shape[0], device=owner.device) - run_start.index_select(0, owner), first


def empty_result(depth: Optional[torch.Tensor], feat: torch.Tensor, shape: BevShape) -> torch.Tensor:
    """No point to pool: float32 zeros, still connected to the graph (zero gradients)."""
    B, D, H, W, C = shape
    # an empty slice's sum links the inputs without reading them: no NaN from inf * 0
    link = sum(t.reshape(-1)[:0].sum() for t in (depth, feat) if t is not None)
    return torch.zeros(B, C, D, H, W, dtype=torch.float32, device=feat.device) + link


def _pool(feat_rows: torch.Tensor, depth_flat: Optional[torch.Tensor], ranks_depth: Optional[torch.Tensor],
          ranks_feat: Optional[torch.Tensor], ranks_bev: torch.Tensor, cells: int) -> torch.Tensor:
    """(cells, C) sums of the points' (depth-weighted) feature rows; ranks_feat None: point i takes row i."""
    out = feat_rows.new_zeros(cells, feat_rows.shape[1])
    points = ranks_bev.shape[0]
    chunk = chunk_size(feat_rows.device)
    for start in range(0, points, chunk):
        part = slice(start, min(start + chunk, points))
        rows = feat_rows[part] if ranks_feat is None else feat_rows.index_select(0, ranks_feat[part])
        if depth_flat is not None:
            rows = rows * depth_flat.index_select(0, ranks_depth[part]).unsqueeze(1)
        out.index_add_(0, ranks_bev[part], rows)
    return out


def _to_bev(out: torch.Tensor, shape: BevShape) -> torch.Tensor:
    B, D, H, W, C = shape
    return out.view(B, D, H, W, C).permute(0, 4, 1, 2, 3).contiguous()  # (B, C, D, H, W)


def _save(ctx, depth: Optional[torch.Tensor], feat: torch.Tensor, depth_flat: Optional[torch.Tensor],
          feat_rows: torch.Tensor, ranks_depth: Optional[torch.Tensor], ranks_feat: Optional[torch.Tensor],
          ranks_bev: torch.Tensor) -> None:
    ctx.shapes = (None if depth is None else depth.shape, feat.shape)
    ctx.save_for_backward(depth_flat, feat_rows, ranks_depth, ranks_feat, ranks_bev)


class BEVPoolV3Portable(torch.autograd.Function):

    @staticmethod
    def forward(ctx, depth: Optional[torch.Tensor], feat: torch.Tensor,
                ranks_depth: Optional[torch.Tensor], ranks_feat: Optional[torch.Tensor],
                ranks_bev: torch.Tensor, bev_feat_shape: Sequence[int]) -> torch.Tensor:
        shape: BevShape = tuple(int(v) for v in bev_feat_shape)  # type: ignore[assignment]
        B, D, H, W, C = shape
        feat_rows = feat.reshape(-1, C)
        if depth is None:  # bev_pool v1 mode: point i pools feature row i
            depth_flat, ranks_depth, ranks_feat = None, None, None
            ranks_bev = flatten_v1_ranks(ranks_bev, D, H, W)
        else:
            depth_flat = depth.reshape(-1)
            ranks_depth, ranks_feat = ranks_depth.long(), ranks_feat.long()
        ranks_bev = ranks_bev.long()
        out = _pool(feat_rows, depth_flat, ranks_depth, ranks_feat, ranks_bev, B * D * H * W)
        _save(ctx, depth, feat, depth_flat, feat_rows, ranks_depth, ranks_feat, ranks_bev)
        return _to_bev(out, shape)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        depth_flat, feat_rows, ranks_depth, ranks_feat, ranks_bev = ctx.saved_tensors
        depth_shape, feat_shape = ctx.shapes
        C = feat_rows.shape[1]
        grad_rows = grad_out.permute(0, 2, 3, 4, 1).reshape(-1, C)  # (B*D*H*W, C)
        want_depth = depth_flat is not None and ctx.needs_input_grad[0]
        want_feat = ctx.needs_input_grad[1]
        grad_depth = depth_flat.new_zeros(depth_flat.shape) if want_depth else None
        grad_feat = feat_rows.new_zeros(feat_rows.shape) if want_feat else None

        points = ranks_bev.shape[0]
        chunk = chunk_size(grad_rows.device)
        for start in range(0, points, chunk):
            part = slice(start, min(start + chunk, points))
            g = grad_rows.index_select(0, ranks_bev[part])
            if ranks_feat is None:  # v1 mode: row i belongs to point i alone
                if want_feat:
                    grad_feat[part] = g
                continue
            if want_depth:
                f = feat_rows.index_select(0, ranks_feat[part])
                grad_depth.index_add_(0, ranks_depth[part], (g * f).sum(1))
            if want_feat:
                g = g * depth_flat.index_select(0, ranks_depth[part]).unsqueeze(1)
                grad_feat.index_add_(0, ranks_feat[part], g)

        grads: List[Optional[torch.Tensor]] = [None] * 6
        if want_depth:
            grads[0] = grad_depth.view(depth_shape)
        if want_feat:
            grads[1] = grad_feat.view(feat_shape)
        return tuple(grads)


class BEVPoolV2Portable(torch.autograd.Function):
    """Forward by intervals; backward point by point over all ranks (BEVPoolV3Portable's)."""

    @staticmethod
    def forward(ctx, depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor,
                ranks_feat: torch.Tensor, ranks_bev: torch.Tensor, bev_feat_shape: Sequence[int],
                interval_starts: torch.Tensor, interval_lengths: torch.Tensor) -> torch.Tensor:
        shape: BevShape = tuple(int(v) for v in bev_feat_shape)  # type: ignore[assignment]
        B, D, H, W, C = shape
        depth_flat, feat_rows = depth.reshape(-1), feat.reshape(-1, C)
        ranks_depth, ranks_feat, ranks_bev = ranks_depth.long(), ranks_feat.long(), ranks_bev.long()
        points, first = interval_points(interval_starts, interval_lengths)
        out = _pool(feat_rows, depth_flat, ranks_depth.index_select(0, points),
                    ranks_feat.index_select(0, points), ranks_bev.index_select(0, first), B * D * H * W)
        _save(ctx, depth, feat, depth_flat, feat_rows, ranks_depth, ranks_feat, ranks_bev)
        return _to_bev(out, shape)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return (*BEVPoolV3Portable.backward(ctx, grad_out), None, None)


def _float32(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.float()  # DrivingSDK's kernels take and give float32


def bev_pool_v3_portable(depth: Optional[torch.Tensor], feat: torch.Tensor,
                         ranks_depth: Optional[torch.Tensor], ranks_feat: Optional[torch.Tensor],
                         ranks_bev: torch.Tensor, bev_feat_shape: Sequence[int]) -> torch.Tensor:
    """mx_driving.bev_pool_v3 in PyTorch; returns float32 (B, C, D, H, W)."""
    shape = check_v3(depth, feat, ranks_depth, ranks_feat, ranks_bev, bev_feat_shape)
    return BEVPoolV3Portable.apply(_float32(depth), feat.float(), ranks_depth, ranks_feat, ranks_bev, shape)


def bev_pool_v2_portable(depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor,
                         ranks_feat: torch.Tensor, ranks_bev: torch.Tensor, bev_feat_shape: Sequence[int],
                         interval_starts: torch.Tensor, interval_lengths: torch.Tensor) -> torch.Tensor:
    """mx_driving.bev_pool_v2 in PyTorch; returns float32 (B, C, D, H, W)."""
    shape = check_v2(depth, feat, ranks_depth, ranks_feat, ranks_bev, bev_feat_shape, interval_starts,
                     interval_lengths)
    return BEVPoolV2Portable.apply(depth.float(), feat.float(), ranks_depth, ranks_feat, ranks_bev, shape,
                                   interval_starts, interval_lengths)


def bev_pool_portable(feat: torch.Tensor, geom_feat: torch.Tensor, B: int, D: int, H: int, W: int) -> torch.Tensor:
    """DrivingSDK's v1 bev_pool in PyTorch: feat (N, C), geom_feat (N, 4) of (h, w, d, b); float32 (B, C, D, H, W)."""
    if feat.shape[0] != geom_feat.shape[0]:
        raise ValueError(V1_COUNTS_DIFFER)
    # DrivingSDK's own checks and messages (mx_driving/csrc/BEVPool.cpp)
    if feat.dim() != 2:
        raise RuntimeError('feat must be 2D tensor(n, c)')
    if geom_feat.dim() != 2:
        raise RuntimeError('coords must be 2D tensor(n, 4)')
    return bev_pool_v3_portable(None, feat, None, None, geom_feat, (B, D, H, W, feat.shape[1]))
