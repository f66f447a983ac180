# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""bev_pool_v3 in plain PyTorch: a scatter-add, forward and backward.

Same contract as DrivingSDK's ``mx_driving.bev_pool_v3``: for every point i,
``out[ranks_bev[i], :] += depth.flat[ranks_depth[i]] * feat_rows[ranks_feat[i], :]``
in any order, so the ranks need no sorting and no intervals. Runs wherever
torch runs (CPU, and CUDA without upstream's compiled extension).

Memory: points are processed in chunks, and nothing of size
(n_points x C) is kept for backward: only the inputs and the int ranks.
"""
from typing import List, Optional, Sequence

import torch

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


class BEVPoolV3Portable(torch.autograd.Function):

    @staticmethod
    def forward(ctx, depth: Optional[torch.Tensor], feat: torch.Tensor,
                ranks_depth: Optional[torch.Tensor], ranks_feat: Optional[torch.Tensor],
                ranks_bev: torch.Tensor, bev_feat_shape: Sequence[int]) -> torch.Tensor:
        B, D, H, W, C = (int(v) for v in bev_feat_shape)
        feat_rows = feat.reshape(-1, C)
        if depth is None:  # bev_pool v1 mode: one feature row per point
            ranks_bev = flatten_v1_ranks(ranks_bev, D, H, W)
            ranks_feat = torch.arange(feat_rows.shape[0], device=feat.device)
        ranks_bev, ranks_feat = ranks_bev.long(), ranks_feat.long()
        ranks_depth = None if depth is None else ranks_depth.long()
        depth_flat = None if depth is None else depth.reshape(-1)

        out = feat_rows.new_zeros(B * D * H * W, C)
        chunk = chunk_size(feat.device)
        for start in range(0, ranks_bev.shape[0], chunk):
            part = slice(start, start + chunk)
            rows = feat_rows.index_select(0, ranks_feat[part])
            if depth_flat is not None:
                rows = rows * depth_flat.index_select(0, ranks_depth[part]).unsqueeze(1)
            out.index_add_(0, ranks_bev[part], rows)

        ctx.with_depth = depth is not None
        ctx.shapes = (None if depth is None else depth.shape, feat.shape)
        ctx.save_for_backward(depth_flat, feat_rows, ranks_depth, ranks_feat, ranks_bev)
        return out.view(B, D, H, W, C).permute(0, 4, 1, 2, 3).contiguous()  # (B, C, D, H, W)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        depth_flat, feat_rows, ranks_depth, ranks_feat, ranks_bev = ctx.saved_tensors
        depth_shape, feat_shape = ctx.shapes
        C = feat_rows.shape[1]
        grad_rows = grad_out.permute(0, 2, 3, 4, 1).reshape(-1, C)  # (B*D*H*W, C)
        want_depth = ctx.with_depth and ctx.needs_input_grad[0]
        want_feat = ctx.needs_input_grad[1]
        grad_depth = depth_flat.new_zeros(depth_flat.shape) if want_depth else None
        grad_feat = feat_rows.new_zeros(feat_rows.shape) if want_feat else None

        chunk = chunk_size(grad_rows.device)
        for start in range(0, ranks_bev.shape[0], chunk):
            part = slice(start, start + chunk)
            g = grad_rows.index_select(0, ranks_bev[part])
            if want_depth:
                f = feat_rows.index_select(0, ranks_feat[part])
                grad_depth.index_add_(0, ranks_depth[part], (g * f).sum(1))
            if want_feat:
                if ctx.with_depth:
                    g = g * depth_flat.index_select(0, ranks_depth[part]).unsqueeze(1)
                grad_feat.index_add_(0, ranks_feat[part], g)

        grads: List[Optional[torch.Tensor]] = [None] * 6
        if want_depth:
            grads[0] = grad_depth.view(depth_shape)
        if want_feat:
            grads[1] = grad_feat.view(feat_shape)
        return tuple(grads)


def bev_pool_v3_portable(depth: Optional[torch.Tensor], feat: torch.Tensor,
                         ranks_depth: Optional[torch.Tensor], ranks_feat: Optional[torch.Tensor],
                         ranks_bev: torch.Tensor, bev_feat_shape: Sequence[int]) -> torch.Tensor:
    """Portable bev_pool_v3; returns (B, C, D, H, W) like mx_driving.bev_pool_v3."""
    return BEVPoolV3Portable.apply(depth, feat, ranks_depth, ranks_feat, ranks_bev,
                                   list(bev_feat_shape))
