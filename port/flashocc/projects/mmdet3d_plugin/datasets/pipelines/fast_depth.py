# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""The nearest LiDAR point per pixel for all cameras, without a sort (FlashOCC porting kit).

PointToMultiViewDepth projects the points into each camera with torch, as
upstream does (the same calls: whatever a platform's BLAS does with the
3x3 products, both paths do it), then keeps the points that round into the
image within the depth range and, per pixel, the point upstream keeps: the
first in argsort order of the float32 keys `ranks + depth / 100.`. The
rounding, the filter and that choice are exact operations (division by an
integer, round-half-even, comparisons, float32 additions without fused
multiply-add), which `keep_points` and `nearest_depth_maps` do in compiled
loops. The choice is the smallest key unless points of different depths
share a pixel's smallest key (the keys quantise depth to up to 1.6 m); only
then does the sort's tie order decide, and torch's CPU argsort is not
stable, so the argsort is run on exactly the array upstream sorts (same
values, same order). Otherwise no sort is needed at all.
"""
import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - mmdet3d requires numba
    numba = None


if numba is not None:
    # error_model='numpy': x / 0 gives inf/nan as in torch instead of raising
    @numba.njit(cache=True, nogil=True, error_model='numpy')
    def _round_and_keep(points_img, ds, width, height, dmin, dmax, out, counts):
        """upstream's points2depthmap up to `coor[kept1], depth[kept1]`, per camera:
        torch.round(points[:, :2] / downsample), then the image and depth filter."""
        for c in range(points_img.shape[0]):
            kept = 0
            for i in range(points_img.shape[1]):
                cu = np.float32(np.rint(points_img[c, i, 0] / ds))
                cv = np.float32(np.rint(points_img[c, i, 1] / ds))
                d = points_img[c, i, 2]
                if cu >= 0 and cu < width and cv >= 0 and cv < height and d < dmax and d >= dmin:
                    out[c, kept, 0] = cu
                    out[c, kept, 1] = cv
                    out[c, kept, 2] = d
                    kept += 1
            counts[c] = kept

    @numba.njit(cache=True, nogil=True)
    def _keys(kept, width):
        """upstream: ranks = coor[:, 0] + coor[:, 1] * width; ranks + depth / 100. (float32)"""
        n = kept.shape[0]
        ranks = np.empty(n, np.float32)
        keys = np.empty(n, np.float32)
        hundred = np.float32(100.0)
        for i in range(n):
            ranks[i] = kept[i, 0] + kept[i, 1] * width
            keys[i] = ranks[i] + kept[i, 2] / hundred
        return ranks, keys

    @numba.njit(cache=True, nogil=True)
    def _nearest_if_unambiguous(kept, keys, best_key, best_depth, out):
        """Per pixel, the depth of the point with the smallest key, written to out,
        if no pixel's smallest key is shared by points of different depths (then
        the order of equal keys, i.e. the sort's tie order, decides nothing).
        Returns False, writing nothing, otherwise. best_* are scratch (H*W)."""
        width = out.shape[1]
        n = kept.shape[0]
        for i in range(n):
            p = int(kept[i, 1]) * width + int(kept[i, 0])
            best_key[p] = np.inf
        ambiguous = False
        for i in range(n):
            p = int(kept[i, 1]) * width + int(kept[i, 0])
            k = keys[i]
            if k < best_key[p]:
                best_key[p] = k
                best_depth[p] = kept[i, 2]
            elif k == best_key[p] and kept[i, 2] != best_depth[p]:
                ambiguous = True
        if ambiguous:
            # a later, smaller key may have replaced a tied one: check ties at the final minimum
            for i in range(n):
                p = int(kept[i, 1]) * width + int(kept[i, 0])
                best_key[p] = np.inf
            for i in range(n):
                p = int(kept[i, 1]) * width + int(kept[i, 0])
                if keys[i] < best_key[p]:
                    best_key[p] = keys[i]
            for i in range(n):
                p = int(kept[i, 1]) * width + int(kept[i, 0])
                best_depth[p] = np.nan
            for i in range(n):
                p = int(kept[i, 1]) * width + int(kept[i, 0])
                if keys[i] == best_key[p]:
                    if best_depth[p] != best_depth[p]:  # nan: first point at the minimum
                        best_depth[p] = kept[i, 2]
                    elif best_depth[p] != kept[i, 2]:
                        return False
        for i in range(n):
            p = int(kept[i, 1]) * width + int(kept[i, 0])
            out[int(kept[i, 1]), int(kept[i, 0])] = best_depth[p]
        return True

    @numba.njit(cache=True, nogil=True)
    def _first_of_each_rank(kept, ranks, order, out):
        """upstream's tail after the argsort: kept2 = ranks[1:] != ranks[:-1] in
        sorted order, then depth_map[v, u] = depth, in that order."""
        previous = np.float32(np.nan)
        for j in range(order.shape[0]):
            i = order[j]
            if j == 0 or ranks[i] != previous:
                out[int(kept[i, 1]), int(kept[i, 0])] = kept[i, 2]
            previous = ranks[i]

def keep_points(points_img, downsample, width, height, depth_range):
    """Per camera c, the (u, v, depth) float32 rows upstream's points2depthmap
    keeps in `coor[kept1], depth[kept1]`, in the same order.

    points_img (C, N, 3) float32: the projected (u, v, d) of each camera, as
    upstream computes them; width/height already divided by downsample.
    Returns a list of C (K_c, 3) float32 numpy arrays.
    """
    f32 = np.float32
    points_img = np.ascontiguousarray(points_img, dtype=f32)
    out = np.empty(points_img.shape, f32)
    counts = np.zeros(points_img.shape[0], np.int64)
    # torch compares/divides a float32 tensor with python scalars in float32
    _round_and_keep(points_img, f32(downsample), f32(width), f32(height), f32(depth_range[0]),
                    f32(depth_range[1]), out, counts)
    return [out[c, :counts[c]] for c in range(points_img.shape[0])]


def nearest_depth_maps(kept, height, width, depth_range):
    """(C, height, width) float32 torch tensor: upstream's nearest_depthmap of each
    camera's kept (u, v, depth) rows. The argsort upstream does is needed only
    where equal float32 keys of different depths meet at a pixel's minimum; then
    it runs on the same key array upstream sorts (same values, same order), so
    its tie order is reproduced."""
    import torch

    maps = np.zeros((len(kept), height, width), np.float32)
    # keys of one pixel stay within [rank, rank + 0.5] while 0 <= depth < 50 and the
    # ranks are exact float32 integers spaced by at most 0.25 ulp: then "first of
    # each pixel in key order" is "smallest key of each pixel"
    shortcut = depth_range[0] >= 0 and depth_range[1] / 100.0 < 0.5 and height * width < (1 << 22)
    best_key = np.empty(height * width, np.float32)
    best_depth = np.empty(height * width, np.float32)
    for c, rows in enumerate(kept):
        if rows.shape[0] == 0:
            continue
        rows = np.ascontiguousarray(rows)
        ranks, keys = _keys(rows, np.float32(width))
        if shortcut and _nearest_if_unambiguous(rows, keys, best_key, best_depth, maps[c]):
            continue
        order = torch.from_numpy(keys).argsort().numpy()
        _first_of_each_rank(rows, ranks, order, maps[c])
    return torch.from_numpy(maps)


def depth_maps(points_img, downsample, height, width, depth_range):
    """(C, height, width) float32 torch tensor: upstream's points2depthmap of each
    camera's projected points (C, N, 3); height/width already divided by downsample."""
    return nearest_depth_maps(keep_points(points_img, downsample, width, height, depth_range),
                              height, width, depth_range)
