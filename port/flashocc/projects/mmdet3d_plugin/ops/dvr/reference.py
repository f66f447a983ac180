# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""Line-by-line Python transcription of FlashOCC's ``dvr.render_forward``.

This is the test oracle for :mod:`.portable`. It follows
``render_forward_cuda_kernel`` in ``lib/dvr/dvr.cu`` one ray (one CUDA
thread) at a time, statement by statement, with Python loops.

Arithmetic: the kernel reads its float32 inputs and does *all* of the ray
set-up and the voxel traversal in ``double``; only the three results are
rounded back to float32 when written. Python ``float`` is an IEEE-754
binary64, and ``+ - * / math.sqrt`` on it are correctly rounded, so this
transcription reproduces the kernel bit for bit wherever nvcc emits the same
IEEE operations. Where the GPU may differ:

* FMA contraction. nvcc contracts ``a * b + c`` into a fused multiply-add by
  default (``--fmad=true``; the extension is built without ``--fmad=false``).
  The only such expression that feeds a result is the ray length
  ``gt_d = sqrt(rx * rx + ry * ry + rz * rz)``; it changes ``gt_d`` (returned
  as ``gt_dist``) and, through ``d = r / gt_d``, the direction by at most an
  ulp or so of double. That can flip a traversal step only where two voxel
  boundary crossings coincide to within about 1e-16 relative, and can move a
  distance by about 1e-16 relative, far below float32 rounding.
  ``fma_norm=True`` evaluates the norm with one plausible contraction,
  ``fma(rz, rz, fma(ry, ry, rx * rx))``, computed exactly and rounded once,
  to measure that sensitivity; which contraction nvcc really picks cannot be
  known without the compiled kernel.
* ``--use_fast_math`` (approximate division, flush-to-zero) affects single
  precision only, and the extension is not built with it anyway.
* ``exp`` is used by the kernel only for the alpha-compositing buffers
  ``csd`` and ``p``, which never reach the outputs of ``render_forward``;
  they are left out here.
"""
import math
import sys
from fractions import Fraction

import numpy as np

MAX_D = 1446  # 700 + 700 + 45 + 1: size of the kernel's per-ray buffers
MAX_STEP = 1000  # the loop runs MAX_STEP + 1 iterations at most
DBL_MAX = sys.float_info.max

TEST, TRAIN = 0, 1


def _fma(a, b, c):
    """Fused multiply-add: a * b + c computed exactly, rounded once."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def _cuda_fmin(a, b):
    """CUDA's device ``min(double, double)``, i.e. ``fmin``: NaN loses."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return a if a < b else b


def render_ray(sigma, origin, points, tindex, n, c, train_phase=TEST,
               fma_norm=False):
    """One thread of ``render_forward_cuda_kernel``.

    Args:
        sigma (np.ndarray): float32, (N, T, Z, Y, X) occupancy / density.
        origin (np.ndarray): float32, (N, T', 3) ray origins in voxel units.
        points (np.ndarray): float32, (N, M, >=3) ray end points, voxel units.
        tindex (np.ndarray): float32, (N, M) time index of every ray.
        n (int): batch index. c (int): ray index.
        train_phase (int): TEST (0) or TRAIN (1).
        fma_norm (bool): evaluate the ray length with FMA contraction.

    Returns:
        None where the kernel writes nothing (padded ray, or a ray that never
        enters the grid), else ``(pred_d, gt_d, (x, y, z))`` as Python floats
        / ints before the float32 store.
    """
    T = sigma.shape[1]
    # `const auto t = tindex[n][c];` keeps the float
    t = float(tindex[n, c])
    assert T == 1 or t < T
    # accessor indices are int32: a float index is truncated
    ts = 0 if T == 1 else int(t)
    if t < 0:
        return None
    ti = int(t)

    vzsize, vysize, vxsize = sigma.shape[2], sigma.shape[3], sigma.shape[4]

    xo = float(origin[n, ti, 0])
    yo = float(origin[n, ti, 1])
    zo = float(origin[n, ti, 2])

    xe = float(points[n, c, 0])
    ye = float(points[n, c, 1])
    ze = float(points[n, c, 2])

    # int(double) truncates towards zero (not floor)
    vxo = int(xo)
    vyo = int(yo)
    vzo = int(zo)

    vx = vxo
    vy = vyo
    vz = vzo

    rx = xe - xo
    ry = ye - yo
    rz = ze - zo
    gt_d = math.sqrt(_fma(rz, rz, _fma(ry, ry, rx * rx)) if fma_norm else rx * rx + ry * ry + rz * rz)

    # 0 / 0 is NaN in C; Python would raise
    if gt_d == 0.0:
        dx = dy = dz = math.nan
    else:
        dx = rx / gt_d
        dy = ry / gt_d
        dz = rz / gt_d

    stepX = 1 if dx >= 0 else -1
    stepY = 1 if dy >= 0 else -1
    stepZ = 1 if dz >= 0 else -1

    next_voxel_boundary_x = float(vx + (0 if stepX < 0 else 1))
    next_voxel_boundary_y = float(vy + (0 if stepY < 0 else 1))
    next_voxel_boundary_z = float(vz + (0 if stepZ < 0 else 1))

    tMaxX = (next_voxel_boundary_x - xo) / dx if dx != 0 else DBL_MAX
    tMaxY = (next_voxel_boundary_y - yo) / dy if dy != 0 else DBL_MAX
    tMaxZ = (next_voxel_boundary_z - zo) / dz if dz != 0 else DBL_MAX

    tDeltaX = stepX / dx if dx != 0 else DBL_MAX
    tDeltaY = stepY / dy if dy != 0 else DBL_MAX
    tDeltaZ = stepZ / dz if dz != 0 else DBL_MAX

    path = []  # int3 path[MAX_D]
    d = []  # double d[MAX_D]

    step = 0
    count = 0
    last_d = 0.0

    was_inside = False
    while True:
        inside = (0 <= vx < vxsize) and (0 <= vy < vysize) and (0 <= vz < vzsize)
        if inside:
            was_inside = True
            path.append((vx, vy, vz))
        elif was_inside:
            break
        _d = 0.0
        # strict '<' everywhere: ties go to z, then y, then x
        if tMaxX < tMaxY:
            if tMaxX < tMaxZ:
                _d = tMaxX
                vx += stepX
                tMaxX += tDeltaX
            else:
                _d = tMaxZ
                vz += stepZ
                tMaxZ += tDeltaZ
        else:
            if tMaxY < tMaxZ:
                _d = tMaxY
                vy += stepY
                tMaxY += tDeltaY
            else:
                _d = tMaxZ
                vz += stepZ
                tMaxZ += tDeltaZ
        if inside:
            # d[count] is the distance at which the ray *leaves* path[count]
            d.append(_d)
            count += 1
        last_d = _d  # noqa: F841 (the kernel's, unused in render_forward too)
        step += 1
        if step > MAX_STEP:
            break

    assert count <= MAX_D
    if count == 0:
        return None

    exp_d = d[count - 1]
    x, y, z = path[count - 1]
    for i in range(count):
        v = path[i]
        occ = float(sigma[n, ts, v[2], v[1], v[0]])
        if occ > 0.5:
            exp_d = d[i]
            x, y, z = v
            break

    max_d = d[count - 1]
    if train_phase == TRAIN:
        gt_d = _cuda_fmin(gt_d, max_d)
    return exp_d, gt_d, (x, y, z)


def render_forward(sigma, origin, points, tindex, grid, phase_name,
                   fma_norm=False, rays=None):
    """All threads of ``render_forward_cuda``, one after another.

    Args:
        sigma, origin, points, tindex: arrays (numpy or torch, converted to
            float32 numpy) shaped as for the CUDA op.
        grid (list[int]): ``[T, Z, Y, X]``; read but unused, as in CUDA.
        phase_name (str): ``"test"`` or ``"train"``.
        fma_norm (bool): see :func:`render_ray`.
        rays (iterable of (n, c), optional): only these rays; the others keep
            the initial output values.

    Returns:
        list: ``[pred_dist (N, M), gt_dist (N, M), coord_index (N, M, 3)]``
        float32 numpy arrays; rays without a result keep -1, -1, (0, 0, 0).
    """
    sigma, origin, points, tindex = [_np32(a) for a in (sigma, origin, points, tindex)]
    if phase_name == "test":
        train_phase = TEST
    elif phase_name == "train":
        train_phase = TRAIN
    else:
        raise ValueError(f"UNKNOWN PHASE NAME: {phase_name}")
    N, M = points.shape[0], points.shape[1]
    gt_dist = -np.ones((N, M), dtype=np.float32)
    pred_dist = -np.ones((N, M), dtype=np.float32)
    coord_index = np.zeros((N, M, 3), dtype=np.float32)
    if rays is None:
        rays = ((n, c) for n in range(N) for c in range(M))
    for n, c in rays:
        out = render_ray(sigma, origin, points, tindex, n, c, train_phase, fma_norm)
        if out is None:
            continue
        exp_d, gt_d, xyz = out
        # the double -> float store rounds to nearest (even)
        pred_dist[n, c] = np.float32(exp_d)
        gt_dist[n, c] = np.float32(gt_d)
        coord_index[n, c] = xyz
    return [pred_dist, gt_dist, coord_index]


def _np32(a):
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(a, dtype=np.float32)
