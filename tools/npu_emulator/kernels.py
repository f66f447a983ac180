"""DrivingSDK's compiled kernels (``mx_driving._C``) emulated in PyTorch on the emulated npu.

Each kernel follows DrivingSDK's documented semantics and limits, checks its inputs as the real one
does (npu tensors, float32 features, int32 ranks), and counts its calls in :data:`CALLS`. Any other
``_C`` function raises :class:`NotEmulated` naming itself when called.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections import Counter
from types import ModuleType
from typing import Any, Callable

import torch

CALLS: Counter = Counter()  # kernel name -> calls, for tests and the rehearsal's report
CHUNK = 1 << 16  # points per step: bounds the (points x C) temporaries
BEV_POOL_V3_MAX_C = 360


class NotEmulated(RuntimeError):
    """A DrivingSDK kernel the rehearsal has no emulation for."""


def _check(kernel: str, name: str, t: torch.Tensor | None, dtypes: tuple, optional: bool = False) -> None:
    if t is None:
        if optional:
            return
        raise RuntimeError(f"{kernel}: {name} must be a tensor, got None")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{kernel}: {name} must be a tensor, got {type(t).__name__}")
    if t.device.type != "npu":
        raise RuntimeError(f"{kernel}: {name} must be an npu tensor, got one on {t.device}")
    if t.dtype not in dtypes:
        wanted = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise RuntimeError(f"{kernel}: {name} must be {wanted}, got {str(t.dtype).replace('torch.', '')}")


def report() -> str | None:
    """One line for a rank's log: the DrivingSDK kernels it reached, and how often (None: none reached)."""
    if not CALLS:
        return None
    calls = " ".join(f"{name}={count}" for name, count in sorted(CALLS.items()))
    return (f"[npu emulator] rank {os.environ.get('RANK', '0')} (pid {os.getpid()}): mx_driving._C kernel calls: "
            f"{calls} (each checked as the real kernel checks: npu tensors, float32 features, int32 ranks)")


def _report_at_exit() -> None:
    line = report()
    if line:
        print(line, file=sys.stderr, flush=True)


atexit.register(_report_at_exit)  # the rehearsal's log shows which kernels the run really reached


def _counted(fn: Callable) -> Callable:
    def kernel(*args: Any, **kwargs: Any):
        CALLS[fn.__name__] += 1
        return fn(*args, **kwargs)

    kernel.__name__ = fn.__name__
    kernel.__doc__ = fn.__doc__
    return kernel


def _init_op_api_so_path(path: str) -> None:
    """DrivingSDK points its op library at CANN here; nothing to load in the emulation."""


# ---------------------------------------------------------------- bev_pool_v3

def _check_v3_shape(kernel: str, C: int, B: int, D: int, H: int, W: int) -> None:
    if C % 8 != 0 or C > BEV_POOL_V3_MAX_C:
        raise RuntimeError(f"{kernel}: the channel count C must be a multiple of 8 and at most "
                           f"{BEV_POOL_V3_MAX_C}, got C={C}")
    if B * D * H * W * C > 2**31:
        raise RuntimeError(f"{kernel}: B*D*H*W*C must be at most 2^31, got {B * D * H * W * C}")


def _v3_channels(feat: torch.Tensor, depth: torch.Tensor | None) -> int:
    return int(feat.shape[-1] if depth is not None else feat.shape[1])


@_counted
def npu_bev_pool_v3(depth, feat, ranks_depth, ranks_feat, ranks_bev, B: int, D: int, H: int, W: int):
    """out[ranks_bev[i]] += depth.flat[ranks_depth[i]] * feat_rows[ranks_feat[i]]; returns (B, D, H, W, C).

    With depth, C is feat's last dimension (feat (B, N, H, W, C)). Without depth (bev_pool v1 mode),
    as DrivingSDK's kernel, C is feat.size(1) and point i adds feature row i (feat may have more rows).
    """
    kernel = "npu_bev_pool_v3"
    _check(kernel, "feat", feat, (torch.float32,))
    _check(kernel, "ranks_bev", ranks_bev, (torch.int32,))
    C = _v3_channels(feat, depth)
    _check_v3_shape(kernel, C, B, D, H, W)
    rows = feat.reshape(-1, C)
    out = rows.new_zeros(B * D * H * W, C)
    ranks_bev = ranks_bev.reshape(-1).long()
    if depth is None:
        n = ranks_bev.shape[0]
        if rows.shape[0] < n:
            raise RuntimeError(f"{kernel}: without depth, feat needs a row per rank ({rows.shape[0]} rows, "
                               f"{n} ranks)")
        out.index_add_(0, ranks_bev, rows[:n])
        return out.view(B, D, H, W, C)
    _check(kernel, "depth", depth, (torch.float32,))
    _check(kernel, "ranks_depth", ranks_depth, (torch.int32,))
    _check(kernel, "ranks_feat", ranks_feat, (torch.int32,))
    depth_flat = depth.reshape(-1)
    ranks_depth, ranks_feat = ranks_depth.long(), ranks_feat.long()
    for start in range(0, ranks_bev.shape[0], CHUNK):
        part = slice(start, start + CHUNK)
        values = rows.index_select(0, ranks_feat[part]) * depth_flat.index_select(0, ranks_depth[part]).unsqueeze(1)
        out.index_add_(0, ranks_bev[part], values)
    return out.view(B, D, H, W, C)


@_counted
def npu_bev_pool_v3_backward(grad_out, depth, feat, ranks_depth, ranks_feat, ranks_bev):
    """(grad_depth, grad_feat) of npu_bev_pool_v3 for grad_out (B, D, H, W, C); grad_depth is None without depth."""
    kernel = "npu_bev_pool_v3_backward"
    _check(kernel, "grad_out", grad_out, (torch.float32,))
    _check(kernel, "feat", feat, (torch.float32,))
    _check(kernel, "ranks_bev", ranks_bev, (torch.int32,))
    B, D, H, W, C = (int(s) for s in grad_out.shape)
    _check_v3_shape(kernel, C, B, D, H, W)
    grad_rows = grad_out.reshape(-1, C)
    ranks_bev = ranks_bev.reshape(-1).long()
    if depth is None:  # row i got point i's cell; rows past the ranks get nothing
        grad_feat = torch.zeros_like(feat).reshape(-1, C)
        grad_feat[: ranks_bev.shape[0]] = grad_rows.index_select(0, ranks_bev)
        return None, grad_feat.view(feat.shape)
    _check(kernel, "depth", depth, (torch.float32,))
    _check(kernel, "ranks_depth", ranks_depth, (torch.int32,))
    _check(kernel, "ranks_feat", ranks_feat, (torch.int32,))
    rows = feat.reshape(-1, C)
    depth_flat = depth.reshape(-1)
    ranks_depth, ranks_feat = ranks_depth.long(), ranks_feat.long()
    grad_depth = torch.zeros_like(depth_flat)
    grad_feat = torch.zeros_like(rows)
    for start in range(0, ranks_bev.shape[0], CHUNK):
        part = slice(start, start + CHUNK)
        g = grad_rows.index_select(0, ranks_bev[part])
        f = rows.index_select(0, ranks_feat[part])
        d = depth_flat.index_select(0, ranks_depth[part])
        grad_depth.index_add_(0, ranks_depth[part], (g * f).sum(1))
        grad_feat.index_add_(0, ranks_feat[part], g * d.unsqueeze(1))
    return grad_depth.view(depth.shape), grad_feat.view(feat.shape)


# ---------------------------------------------------------------- bev_pool (v1) and bev_pool_v2: interval kernels

def _interval_points(kernel: str, interval_lengths, interval_starts) -> tuple[torch.Tensor, torch.Tensor]:
    """For every point an interval covers: (its position, the start of its interval)."""
    _check(kernel, "interval_lengths", interval_lengths, (torch.int32,))
    _check(kernel, "interval_starts", interval_starts, (torch.int32,))
    lengths, starts = interval_lengths.long(), interval_starts.long()
    owner = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
    first = torch.cumsum(lengths, 0) - lengths  # where each interval's run begins in `owner`
    offset = torch.arange(owner.shape[0], device=lengths.device) - first.index_select(0, owner)
    start = starts.index_select(0, owner)
    return start + offset, start


def _v1_rank(geom: torch.Tensor, D: int, H: int, W: int) -> torch.Tensor:
    """Flat (b, d, h, w) index of bev_pool's coordinates (h, w, d, b) per point."""
    g = geom.long()
    return g[:, 3] * (D * H * W) + g[:, 2] * (H * W) + g[:, 0] * W + g[:, 1]


@_counted
def npu_bev_pool(feat, geom_feat, interval_lengths, interval_starts, B: int, D: int, H: int, W: int):
    """Sums each interval's feature rows into its first point's voxel; returns (B, D, H, W, C)."""
    kernel = "npu_bev_pool"
    _check(kernel, "feat", feat, (torch.float32,))
    _check(kernel, "geom_feat", geom_feat, (torch.int32,))
    C = int(feat.shape[-1])
    if C > 1024:
        raise RuntimeError(f"{kernel}: C must be at most 1024, got {C}")
    points, start = _interval_points(kernel, interval_lengths, interval_starts)
    out = feat.new_zeros(B * D * H * W, C)
    out.index_add_(0, _v1_rank(geom_feat.index_select(0, start), D, H, W), feat.index_select(0, points))
    return out.view(B, D, H, W, C)


@_counted
def npu_bev_pool_backward(grad_out, geom_feat, interval_lengths, interval_starts, B: int, D: int, H: int, W: int):
    kernel = "npu_bev_pool_backward"
    _check(kernel, "grad_out", grad_out, (torch.float32,))
    _check(kernel, "geom_feat", geom_feat, (torch.int32,))
    C = int(grad_out.shape[-1])
    points, start = _interval_points(kernel, interval_lengths, interval_starts)
    grad_feat = grad_out.new_zeros(geom_feat.shape[0], C)
    ranks = _v1_rank(geom_feat.index_select(0, start), D, H, W)
    grad_feat.index_copy_(0, points, grad_out.reshape(-1, C).index_select(0, ranks))
    return grad_feat


@_counted
def npu_bev_pool_v2(depth, feat, ranks_depth, ranks_feat, ranks_bev, interval_lengths, interval_starts,
                    B: int, D: int, H: int, W: int):
    """Per interval, the depth-weighted sum of feature rows into ranks_bev of its first point; (B, D, H, W, C)."""
    kernel = "npu_bev_pool_v2"
    for name, t in (("depth", depth), ("feat", feat)):
        _check(kernel, name, t, (torch.float32,))
    for name, t in (("ranks_depth", ranks_depth), ("ranks_feat", ranks_feat), ("ranks_bev", ranks_bev)):
        _check(kernel, name, t, (torch.int32,))
    C = int(feat.shape[-1])
    if C > 1024:
        raise RuntimeError(f"{kernel}: C must be at most 1024, got {C}")
    points, start = _interval_points(kernel, interval_lengths, interval_starts)
    rows = feat.reshape(-1, C).index_select(0, ranks_feat.long().index_select(0, points))
    weights = depth.reshape(-1).index_select(0, ranks_depth.long().index_select(0, points))
    out = feat.new_zeros(B * D * H * W, C)
    out.index_add_(0, ranks_bev.long().index_select(0, start), rows * weights.unsqueeze(1))
    return out.view(B, D, H, W, C)


@_counted
def npu_bev_pool_v2_backward(grad_out, depth, feat, ranks_depth, ranks_feat, ranks_bev, interval_lengths,
                             interval_starts, B: int, D: int, H: int, W: int):
    kernel = "npu_bev_pool_v2_backward"
    for name, t in (("grad_out", grad_out), ("depth", depth), ("feat", feat)):
        _check(kernel, name, t, (torch.float32,))
    for name, t in (("ranks_depth", ranks_depth), ("ranks_feat", ranks_feat), ("ranks_bev", ranks_bev)):
        _check(kernel, name, t, (torch.int32,))
    C = int(feat.shape[-1])
    points, _ = _interval_points(kernel, interval_lengths, interval_starts)
    rd = ranks_depth.long().index_select(0, points)
    rf = ranks_feat.long().index_select(0, points)
    rb = ranks_bev.long().index_select(0, points)
    g = grad_out.reshape(-1, C).index_select(0, rb)
    rows = feat.reshape(-1, C).index_select(0, rf)
    weights = depth.reshape(-1).index_select(0, rd)
    grad_depth = torch.zeros_like(depth.reshape(-1)).index_add_(0, rd, (g * rows).sum(1))
    grad_feat = torch.zeros_like(feat.reshape(-1, C)).index_add_(0, rf, g * weights.unsqueeze(1))
    return grad_depth.view(depth.shape), grad_feat.view(feat.shape)


# ---------------------------------------------------------------- npu_add_relu

@_counted
def npu_add_relu(x, y):
    """relu(x + y) (DrivingSDK's fused add+relu of ResNet blocks); its gradient is computed by the wrapper."""
    kernel = "npu_add_relu"
    _check(kernel, "x", x, (torch.float32, torch.float16))
    _check(kernel, "y", y, (x.dtype,))
    if x.shape != y.shape:
        raise RuntimeError(f"{kernel}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    return torch.relu(x + y)


KERNELS: dict[str, Callable] = {
    fn.__name__: fn
    for fn in (npu_bev_pool_v3, npu_bev_pool_v3_backward, npu_bev_pool, npu_bev_pool_backward, npu_bev_pool_v2,
               npu_bev_pool_v2_backward, npu_add_relu)
}


def _not_emulated(name: str) -> Callable:
    def kernel(*args: Any, **kwargs: Any):
        raise NotEmulated(f"mx_driving._C.{name} is not emulated by the kit's NPU rehearsal")

    kernel.__name__ = name
    return kernel


class _EmulatedC(ModuleType):
    """``mx_driving._C``: the emulated kernels; any other function raises when called."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _not_emulated(name)


def make_module(name: str = "mx_driving._C") -> ModuleType:
    module = _EmulatedC(name, __doc__)
    module.__file__ = __file__
    module._init_op_api_so_path = _init_op_api_so_path
    for kernel_name, fn in KERNELS.items():
        setattr(module, kernel_name, fn)
    module.EMULATED = True
    return module
