# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""References the port is checked against (tests, tools/bev_pool_parity.py).

- ``sort_into_intervals``: upstream's prepare step after the rank
  computation: sort by BEV rank, then cut into runs of equal rank.
- ``bev_pool_v2_sorted``: upstream bev_pool_v2's algorithm in PyTorch: one
  segment sum per interval, written to the interval's BEV cell. Gradients
  come from autograd.
- ``bev_pool_brute_force``: a Python loop over points, for small inputs.
"""
from typing import Optional, Sequence, Tuple

import torch


def sort_into_intervals(ranks_bev: torch.Tensor, ranks_depth: torch.Tensor,
                        ranks_feat: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Upstream's order-and-interval step: returns the five int32 tensors
    ranks_bev, ranks_depth, ranks_feat (sorted by BEV rank), interval_starts,
    interval_lengths; None five times when there is no point."""
    if ranks_bev.numel() == 0:
        return None, None, None, None, None
    order = ranks_bev.argsort()
    ranks_bev, ranks_depth, ranks_feat = ranks_bev[order], ranks_depth[order], ranks_feat[order]
    kept = torch.ones(ranks_bev.shape[0], device=ranks_bev.device, dtype=torch.bool)
    kept[1:] = ranks_bev[1:] != ranks_bev[:-1]
    interval_starts = torch.where(kept)[0].int()
    interval_lengths = torch.zeros_like(interval_starts)
    interval_lengths[:-1] = interval_starts[1:] - interval_starts[:-1]
    interval_lengths[-1] = ranks_bev.shape[0] - interval_starts[-1]
    return (ranks_bev.int().contiguous(), ranks_depth.int().contiguous(),
            ranks_feat.int().contiguous(), interval_starts.contiguous(),
            interval_lengths.contiguous())


def bev_pool_v2_sorted(depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor,
                       ranks_feat: torch.Tensor, ranks_bev: torch.Tensor,
                       bev_feat_shape: Sequence[int], interval_starts: torch.Tensor,
                       interval_lengths: torch.Tensor) -> torch.Tensor:
    """bev_pool_v2 (sorted ranks + intervals) in PyTorch; returns (B, C, D, H, W)."""
    B, D, H, W, C = (int(v) for v in bev_feat_shape)
    contrib = (feat.reshape(-1, C).index_select(0, ranks_feat.long())
               * depth.reshape(-1).index_select(0, ranks_depth.long()).unsqueeze(1))
    sums = torch.segment_reduce(contrib, 'sum', lengths=interval_lengths.long(), axis=0)
    cells = ranks_bev.long().index_select(0, interval_starts.long())
    out = feat.new_zeros(B * D * H * W, C).index_copy(0, cells, sums)
    return out.view(B, D, H, W, C).permute(0, 4, 1, 2, 3).contiguous()


def bev_pool_v3_sorted(depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor,
                       ranks_feat: torch.Tensor, ranks_bev: torch.Tensor,
                       bev_feat_shape: Sequence[int]) -> torch.Tensor:
    """bev_pool_v3's contract computed upstream's way: sort, intervals, segment sums."""
    B, D, H, W, C = (int(v) for v in bev_feat_shape)
    sorted_ranks = sort_into_intervals(ranks_bev, ranks_depth, ranks_feat)
    if sorted_ranks[0] is None:
        return feat.new_zeros(B, C, D, H, W) + 0 * (depth.sum() + feat.sum())
    rb, rd, rf, starts, lengths = sorted_ranks
    return bev_pool_v2_sorted(depth, feat, rd, rf, rb, bev_feat_shape, starts, lengths)


def bev_pool_brute_force(depth: Optional[torch.Tensor], feat: torch.Tensor,
                         ranks_depth: torch.Tensor, ranks_feat: torch.Tensor,
                         ranks_bev: torch.Tensor, bev_feat_shape: Sequence[int]) -> torch.Tensor:
    """One point at a time, in float64, no autograd tricks: the definition itself."""
    B, D, H, W, C = (int(v) for v in bev_feat_shape)
    feat_rows = feat.detach().double().reshape(-1, C)
    depth_flat = depth.detach().double().reshape(-1)
    out = torch.zeros(B * D * H * W, C, dtype=torch.float64)
    for rd, rf, rb in zip(ranks_depth.tolist(), ranks_feat.tolist(), ranks_bev.tolist()):
        out[rb] += depth_flat[rd] * feat_rows[rf]
    return out.view(B, D, H, W, C).permute(0, 4, 1, 2, 3).contiguous()


def bev_pool_brute_force_grads(depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor,
                               ranks_feat: torch.Tensor, ranks_bev: torch.Tensor,
                               grad_out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of sum(out * grad_out) for depth and feat, point by point in float64."""
    C = feat.shape[-1]
    feat_rows = feat.detach().double().reshape(-1, C)
    depth_flat = depth.detach().double().reshape(-1)
    grad_rows = grad_out.detach().double().permute(0, 2, 3, 4, 1).reshape(-1, C)
    grad_depth = torch.zeros_like(depth_flat)
    grad_feat = torch.zeros_like(feat_rows)
    for rd, rf, rb in zip(ranks_depth.tolist(), ranks_feat.tolist(), ranks_bev.tolist()):
        grad_depth[rd] += (grad_rows[rb] * feat_rows[rf]).sum()
        grad_feat[rf] += depth_flat[rd] * grad_rows[rb]
    return grad_depth.view(depth.shape), grad_feat.view(feat.shape)
