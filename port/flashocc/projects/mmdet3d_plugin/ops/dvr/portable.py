# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""Portable PyTorch replacement for FlashOCC's CUDA ray caster ``dvr``.

``render_forward`` takes the arguments of the CUDA op
``dvr.render_forward`` (``lib/dvr/dvr.cpp``, ``lib/dvr/dvr.cu``) and returns
the same three tensors, computed with plain tensor operations on whatever
device the inputs live on (CPU, CUDA, NPU, ...). It is written to agree with
the kernel bit for bit: the ray set-up and the traversal use float64, as the
kernel does, with the same operations in the same order and the same
tie-breaking between voxel faces (``reference.py`` is the kernel, line by
line).

Rays are traversed together, one voxel step per iteration; finished rays
are dropped every few steps, and rays are taken in chunks, so memory stays
bounded whatever their number.
"""
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ['render_forward']

# The kernel's loop runs at most MAX_STEP + 1 iterations.
MAX_STEP = 1000
_DBL_MAX = torch.finfo(torch.float64).max
# Traversal steps between two looks for finished rays.
_BLOCK = 8
# Voxel codes of the padded lookup table.
_FREE, _OCCUPIED, _OUTSIDE = 0, 1, 2


def render_forward(sigma: torch.Tensor,
                   origin: torch.Tensor,
                   points: torch.Tensor,
                   tindex: torch.Tensor,
                   grid: Sequence[int],
                   phase_name: str,
                   chunk_size: int = 1 << 14,
                   compute_device: Optional[torch.device] = None
                   ) -> List[torch.Tensor]:
    """Cast rays through a voxel grid and stop at the first occupied voxel.

    Same arguments and results as the CUDA ``dvr.render_forward``. All
    coordinates are in voxel units: voxel ``(x, y, z)`` spans
    ``[x, x + 1) x [y, y + 1) x [z, z + 1)``.

    Args:
        sigma (Tensor): (N, T, Z, Y, X) occupancy; a voxel is occupied where
            ``sigma > 0.5``. T == 1 means one grid for all rays of an entry.
        origin (Tensor): (N, T', 3) ray origins ``(x, y, z)``.
        points (Tensor): (N, M, 3 or more) ray end points; only the direction
            of ``points - origin`` matters for the traversal, which does not
            stop at the end point.
        tindex (Tensor): (N, M) time index of every ray: selects
            ``origin[n, int(t)]`` and, when T > 1, ``sigma[n, int(t)]``; a
            negative value marks a padded ray, which gets no result.
        grid (Sequence[int]): ``[T, Z, Y, X]``; unused, as in CUDA (the grid
            shape is taken from ``sigma``).
        phase_name (str): ``'test'``: ``gt_dist`` is the origin-to-end-point
            distance. ``'train'``: it is capped at the distance where the ray
            leaves the grid.
        chunk_size (int): rays traversed together; bounds the memory (about
            250 bytes a ray). The default keeps a chunk's traversal state
            in a CPU core's cache; one step costs about 20 tensor
            operations, so much smaller chunks pay in per-call overhead.
        compute_device (torch.device, optional): where to compute; default
            ``sigma.device``. The traversal needs float64, which some
            accelerators lack or emulate slowly; pass ``'cpu'`` there.

    Returns:
        list[Tensor]: ``[pred_dist, gt_dist, coord_index]`` on ``sigma``'s
        device, in torch's default dtype (float32), as the CUDA op:

        - pred_dist (N, M): distance from the origin at which the ray leaves
          the first occupied voxel it meets (the voxel holding the origin
          counts); where it meets none, the distance at which it leaves the
          grid.
        - gt_dist (N, M): ``|points - origin|`` (see ``phase_name``).
        - coord_index (N, M, 3): ``(x, y, z)`` of that voxel, or of the last
          voxel inside the grid.

        Rays that are padded or never enter the grid keep -1, -1, (0, 0, 0).
    """
    if phase_name == 'test':
        train = False
    elif phase_name == 'train':
        train = True
    else:
        # the CUDA op prints this and calls exit(1)
        raise ValueError(f'UNKNOWN PHASE NAME: {phase_name}')
    if sigma.dim() != 5 or origin.dim() != 3 or points.dim() != 3 \
            or tindex.dim() != 2:
        raise ValueError(
            'expected sigma (N, T, Z, Y, X), origin (N, T, 3), points '
            f'(N, M, 3+) and tindex (N, M); got {tuple(sigma.shape)}, '
            f'{tuple(origin.shape)}, {tuple(points.shape)}, {tuple(tindex.shape)}')
    N, M = points.shape[0], points.shape[1]
    if points.shape[2] < 3 or origin.shape[2] < 3 \
            or tuple(tindex.shape) != (N, M) \
            or sigma.shape[0] < N or origin.shape[0] < N:
        raise ValueError(f'inconsistent shapes: sigma {tuple(sigma.shape)}, origin '
                         f'{tuple(origin.shape)}, points {tuple(points.shape)}, '
                         f'tindex {tuple(tindex.shape)}')

    out_device = sigma.device
    dev = torch.device(compute_device) if compute_device is not None else out_device
    dtype = torch.get_default_dtype()
    pred_dist = -torch.ones(N * M, dtype=dtype, device=dev)
    gt_dist = -torch.ones(N * M, dtype=dtype, device=dev)
    coord_index = torch.zeros(N * M, 3, dtype=dtype, device=dev)

    if N * M > 0:
        with torch.no_grad():
            _render(sigma[:N].to(dev), origin[:N].to(dev), points.to(dev),
                    tindex.to(dev), train, max(1, int(chunk_size)),
                    pred_dist, gt_dist, coord_index)

    return [pred_dist.view(N, M).to(out_device),
            gt_dist.view(N, M).to(out_device),
            coord_index.view(N, M, 3).to(out_device)]


def _render(sigma, origin, points, tindex, train, chunk_size,
            pred_dist, gt_dist, coord_index):
    """Fill the flat (N * M) outputs in place."""
    dev = sigma.device
    f64 = torch.float64
    N, M = points.shape[0], points.shape[1]
    T, Z, Y, X = sigma.shape[1], sigma.shape[2], sigma.shape[3], sigma.shape[4]
    To = origin.shape[1]
    Zp, Yp, Xp = Z + 2, Y + 2, X + 2
    V = Zp * Yp * Xp  # voxels of one padded grid

    t = tindex.to(f64).reshape(-1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError('tindex must be finite')
    valid = t >= 0
    # float indices are truncated, as by the kernel's int32 accessors
    ti = t.clamp(min=0).to(torch.int64)
    if bool((valid & (ti >= To)).any()):
        raise IndexError(f'tindex out of range for origin of shape {tuple(origin.shape)}')
    if T > 1 and bool((valid & (ti >= T)).any()):
        # the kernel's device-side assert(T == 1 || t < T)
        raise IndexError(f'tindex out of range for sigma with T = {T}')

    occ = (sigma > 0.5).reshape(N * T, Z, Y, X)
    table = _table(occ)
    empty = None
    if train:
        # an all-free grid: traversing it gives the grid-exit distance
        empty = _table(torch.zeros(1, Z, Y, X, dtype=torch.bool, device=dev))
    origin64 = origin[:, :, :3].to(f64).reshape(-1, 3)
    points64 = points[:, :, :3].to(f64).reshape(-1, 3)
    sizes = torch.tensor([[X], [Y], [Z]], dtype=f64, device=dev)
    strides = torch.tensor([1, Xp, Yp * Xp], dtype=f64, device=dev)

    all_valid = bool(valid.all())
    rays = None if all_valid else valid.nonzero().squeeze(1)
    R = N * M if all_valid else rays.numel()
    for s in range(0, R, chunk_size):
        e = min(s + chunk_size, R)
        r = torch.arange(s, e, device=dev) if all_valid else rays[s:e]
        n = r // M
        tr = ti.index_select(0, r)
        o = origin64.index_select(0, n * To + tr if To > 1 else n)
        gt_d, v0, step, tmax, tdelta = _setup(o.t(), points64.index_select(0, r).t())
        grid_of = n * T + tr if T > 1 else n  # the (n, t) grid of each ray
        # Rays starting in a grid voxel with a proper direction take the
        # fast path; the rest (origin outside, zero-length ray, overflow)
        # the transcription of the kernel's loop.
        fast = (((v0 >= 0) & (v0 < sizes)).all(0) & (gt_d > 0)
                & (tmax.abs() <= _DBL_MAX).all(0) & (tdelta.abs() <= _DBL_MAX).all(0))
        all_fast = bool(fast.all())
        fi = None if all_fast else fast.nonzero().squeeze(1)

        def sub(x, all_fast=all_fast, fi=fi):
            return x if all_fast else x.index_select(-1, fi)

        res_d = torch.empty(r.numel(), dtype=f64, device=dev)
        res_v = torch.empty(r.numel(), 3, dtype=f64, device=dev)
        gt_out = gt_d
        ok = fast
        if all_fast or fi.numel() > 0:
            lin0 = torch.mv((sub(v0) + 1).t(), strides)
            steplin = sub(step) * strides[:, None]
            g_off = sub(grid_of).to(f64) * V
            tm, td = sub(tmax), sub(tdelta)
            d, lin = _march(table, lin0 + g_off, tm, td, steplin)
            v = _unflatten(lin - g_off, Xp, Yp) - 1
            if all_fast:
                res_d, res_v = d, v
            else:
                res_d[fi] = d
                res_v[fi] = v
            if train:
                # the kernel's max_d: where the ray leaves the grid (or the
                # step limit stops it), whatever it met on the way
                max_d, _ = _march(empty, lin0, tm, td, steplin)
                # CUDA's device min(double, double) is fmin: NaN loses
                gt_out = gt_d.clone()
                gt_out[fast] = torch.fmin(sub(gt_d), max_d)

        if not all_fast:
            si = (~fast).nonzero().squeeze(1)
            i64 = torch.int64
            entered, d, v, max_d = _march_general(
                occ.view(-1), grid_of[si], v0[:, si].t().to(i64),
                step[:, si].t().to(i64), tmax[:, si].t(), tdelta[:, si].t(),
                (X, Y, Z), train)
            ok = fast.clone()
            ok[si] = entered
            res_d[si] = d
            res_v[si] = v.to(f64)
            if train:
                gt_out = gt_out.clone()
                gt_out[si] = torch.fmin(gt_d[si], max_d)
        if all_valid and bool(ok.all()):
            pred_dist[s:e] = res_d
            gt_dist[s:e] = gt_out
            coord_index[s:e] = res_v
        else:
            oi = ok.nonzero().squeeze(1)
            r = r[oi]
            pred_dist.index_copy_(0, r, res_d[oi].to(pred_dist.dtype))
            gt_dist.index_copy_(0, r, gt_out[oi].to(gt_dist.dtype))
            coord_index.index_copy_(0, r, res_v[oi].to(coord_index.dtype))


def _unflatten(lin: torch.Tensor, Xp: int, Yp: int) -> torch.Tensor:
    """(m,) float64 padded-grid indices to (m, 3) float64 (x, y, z).

    Float64 division is exact enough here: for a non-negative integer
    l < 2 ** 40 and a divisor q, l / q rounds to below the next integer,
    so floor gives l // q (torch's int64 division is much slower).
    """
    z = torch.floor(lin / (Xp * Yp))
    rem = lin - z * (Xp * Yp)
    y = torch.floor(rem / Xp)
    x = rem - y * Xp
    return torch.stack([x, y, z], 1)


def _table(occ: torch.Tensor) -> torch.Tensor:
    """Flat int8 lookup table of voxel codes, one padded grid after another.

    Args:
        occ (Tensor): (J, Z, Y, X) bool occupancy of J grids.

    Returns:
        Tensor: entry ``((j * Zp + z + 1) * Yp + y + 1) * Xp + x + 1`` is the
        code of voxel (x, y, z) of grid j; the grids are padded with one
        layer of _OUTSIDE voxels, Zp, Yp, Xp = Z + 2, Y + 2, X + 2.
    """
    J, Z, Y, X = occ.shape
    t = torch.full((J, Z + 2, Y + 2, X + 2), _OUTSIDE, dtype=torch.int8,
                   device=occ.device)
    t[:, 1:Z + 1, 1:Y + 1, 1:X + 1] = occ
    return t.view(-1)


def _setup(o: torch.Tensor, e: torch.Tensor
           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                      torch.Tensor]:
    """The kernel's per-ray set-up, in float64.

    Args:
        o, e (Tensor): (3, m) float64 origins and end points, rows x, y, z.

    Returns:
        (gt_d, v0, step, tmax, tdelta): the ray length (m,), and as (3, m)
        float64: the origin voxel (truncated towards zero, like C's int()),
        the step direction (+-1), the distance to the first boundary
        crossing on each axis (tMax) and between two crossings (tDelta);
        DBL_MAX on axes the ray does not move along.
    """
    r = e - o
    rx, ry, rz = r[0], r[1], r[2]
    # written out: the kernel's sum order, and no fused multiply-add
    gt_d = torch.sqrt(rx * rx + ry * ry + rz * rz)
    dvec = r / gt_d
    v0 = o.trunc()
    # (d >= 0) is False for NaN: step -1, as in C
    up = (dvec >= 0).to(torch.float64)
    step = up * 2 - 1
    still = dvec == 0
    tmax = ((v0 + up) - o) / dvec
    tmax.masked_fill_(still, _DBL_MAX)
    tdelta = step / dvec
    tdelta.masked_fill_(still, _DBL_MAX)
    return gt_d, v0, step, tmax, tdelta


def _march(codes: torch.Tensor, lin: torch.Tensor, tmax: torch.Tensor,
           tdelta: torch.Tensor, steplin: torch.Tensor
           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Traverse rays that start inside the grid, to their stop voxels.

    Args:
        codes (Tensor): flat int8 lookup table (see :func:`_table`).
        lin (Tensor): (m,) float64 table index of each ray's start voxel.
        tmax, tdelta (Tensor): (3, m) float64, rows x, y, z: distance to the
            next boundary crossing and between two crossings.
        steplin (Tensor): (3, m) float64 change of the table index for a
            step along x, y, z.

    Returns:
        (d, lin): (m,) float64: the distance at which each ray
        leaves its stop voxel, and that voxel's table index. The stop voxel
        is the first occupied one, or the last one before the ray leaves the
        grid, or the one where the kernel's step limit stops it.

    Iteration k looks at voxel k of the path: its exit distance d_k is the
    smallest tMax; the ray stops there if voxel k is occupied or voxel k + 1
    is outside. That is the kernel's loop, which records (voxel k, d_k) and
    returns the first occupied record or the last one.

    All of it is float64 arithmetic into preallocated tensors: on CPU,
    torch's comparisons into bool, int64 arithmetic, torch.where and fresh
    allocations each cost several times a float64 operation. Table indices
    stay exact in float64, and 0/1 masks select by multiplication.
    """
    dev = lin.device
    f64 = torch.float64
    m = lin.numel()
    out_d = torch.empty(m, dtype=f64, device=dev)
    out_lin = torch.empty(m, dtype=f64, device=dev)
    # Rows: tx ty tz dx dy dz sx sy-sx sz-sx lin ray code alive d_stop
    # lin_stop. One index_select drops finished rays from all of them.
    state = torch.empty(16, m, dtype=f64, device=dev)
    state[0:3] = tmax
    state[3:6] = tdelta
    state[6] = steplin[0]
    torch.sub(steplin[1:], steplin[0], out=state[7:9])
    state[9] = lin
    state[10] = torch.arange(m, device=dev, dtype=f64)
    state[11] = codes.index_select(0, lin.to(torch.int64))
    state[12] = 1
    state[13:16] = 0
    index_dtype = torch.int32 if codes.numel() < 2 ** 31 else torch.int64
    top = codes.numel() - 1
    it = 0
    while state.shape[1] > 0:
        kb = min(_BLOCK, MAX_STEP + 1 - it)
        mm = state.shape[1]
        tx, ty, tz, dx, dy, dz, sx, syx, szx, lin, _, code, alive, res_d, \
            res_lin, _ = state
        m1, fz, nfz, fyx, fy, fx, d, nxt, nxt_code, stop = \
            torch.empty(10, mm, dtype=f64, device=dev)
        idx = torch.empty(mm, dtype=index_dtype, device=dev)
        code8 = torch.empty(mm, dtype=torch.int8, device=dev)
        # Finished rays keep stepping until they are dropped: `alive`
        # keeps their first stop, and clamping their index keeps it on the
        # table (where they read codes nobody looks at).
        for k in range(kb):
            torch.minimum(tx, ty, out=m1)
            torch.minimum(m1, tz, out=d)
            # The kernel steps z if tz <= tx and tz <= ty, else y if
            # ty <= tx, else x: on a tie z wins, then y.
            torch.le(tz, m1, out=fz)
            torch.gt(tz, m1, out=nfz)
            torch.le(ty, tx, out=fyx)
            torch.mul(fyx, nfz, out=fy)
            torch.sub(nfz, fy, out=fx)
            # t + 1 * delta rounds once, like the kernel's tMax += tDelta;
            # t + 0 * delta is t
            tx.addcmul_(fx, dx)
            ty.addcmul_(fy, dy)
            tz.addcmul_(fz, dz)
            torch.add(lin, sx, out=nxt)
            nxt.addcmul_(fy, syx)
            nxt.addcmul_(fz, szx)
            idx.copy_(nxt)
            idx.clamp_(0, top)
            torch.index_select(codes, 0, idx, out=code8)
            nxt_code.copy_(code8)
            # Stop at this voxel if it is occupied (code 1) or the next one
            # is outside (code 2): max(code, next - 1) is 1 exactly then,
            # while the ray is alive (its voxel inside: code 0 or 1).
            torch.sub(nxt_code, 1, out=stop)
            torch.maximum(code, stop, out=stop)
            if it + k == MAX_STEP:
                stop.fill_(1)  # the kernel's step limit
            stop.mul_(alive)
            res_d.addcmul_(stop, d)
            res_lin.addcmul_(stop, lin)
            alive.sub_(stop)
            lin, nxt = nxt, lin
            code, nxt_code = nxt_code, code
        it += kb
        if kb % 2:
            # odd number of swaps: the current values are in the buffers
            state[9] = lin
            state[11] = code
        done = alive < 0.5
        si = done.nonzero().squeeze(1)
        # drop the finished rays once they are a good part of the work
        if si.numel() > 0 and (4 * si.numel() >= mm or it > MAX_STEP):
            rays = state[10, si].to(torch.int64)
            out_d[rays] = res_d[si]
            out_lin[rays] = res_lin[si]
            state = state.index_select(1, (~done).nonzero().squeeze(1))
    return out_d, out_lin


def _march_general(occ_flat: torch.Tensor, g: torch.Tensor, v: torch.Tensor,
                   step: torch.Tensor, tmax: torch.Tensor, tdelta: torch.Tensor,
                   size: Tuple[int, int, int], train: bool
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                              torch.Tensor]:
    """The kernel's loop as it stands, for rays the fast path does not take.

    These start outside the grid (they may enter it later, or never: then
    the loop runs to the step limit) or have no direction (a zero-length
    ray: all NaN, it walks down in z). Columns are (x, y, z).

    Returns:
        (ok, d, v, max_d): whether the ray entered the grid (the kernel's
        count > 0), the distance and voxel of its result, and the exit
        distance of the last voxel inside (the kernel's max_d).
    """
    dev = v.device
    m = v.shape[0]
    X, Y, Z = size
    sizes = torch.tensor([X, Y, Z], dtype=torch.int64, device=dev)
    v = v.clone()
    tmax = tmax.clone()
    was_inside = torch.zeros(m, dtype=torch.bool, device=dev)
    found = torch.zeros(m, dtype=torch.bool, device=dev)
    res_d = torch.zeros(m, dtype=torch.float64, device=dev)
    res_v = torch.zeros(m, 3, dtype=torch.int64, device=dev)
    last_d = torch.zeros(m, dtype=torch.float64, device=dev)
    last_v = torch.zeros(m, 3, dtype=torch.int64, device=dev)
    live = torch.arange(m, device=dev)  # rays still in the loop
    for _ in range(MAX_STEP + 1):
        vl = v[live]
        inside = ((vl >= 0) & (vl < sizes)).all(1)
        # left the grid after being in it: the kernel breaks here
        stay = inside | ~was_inside[live]
        live = live[stay]
        inside = inside[stay]
        if live.numel() == 0:
            break
        was_inside[live] |= inside
        tm = tmax[live]
        tx, ty, tz = tm[:, 0], tm[:, 1], tm[:, 2]
        # the kernel's comparisons, verbatim (NaN compares False)
        ax = torch.where(tx < ty, torch.where(tx < tz, 0, 2),
                         torch.where(ty < tz, 1, 2)).unsqueeze(1)
        _d = tm.gather(1, ax).squeeze(1)
        ii = live[inside]
        if ii.numel() > 0:
            vi = v[ii]
            di = _d[inside]
            flat = ((g[ii] * Z + vi[:, 2]) * Y + vi[:, 1]) * X + vi[:, 0]
            hit = occ_flat[flat] & ~found[ii]
            hi = ii[hit]
            res_d[hi] = di[hit]
            res_v[hi] = vi[hit]
            found[hi] = True
            last_d[ii] = di
            last_v[ii] = vi
        tmax[live] = tm.scatter_add(1, ax, tdelta[live].gather(1, ax))
        v[live] = v[live].scatter_add(1, ax, step[live].gather(1, ax))
        if not train:
            # in test mode nothing after the first hit reaches the outputs
            live = live[~found[live]]
    d = torch.where(found, res_d, last_d)
    vv = torch.where(found[:, None], res_v, last_v)
    return was_inside, d, vv, last_d
