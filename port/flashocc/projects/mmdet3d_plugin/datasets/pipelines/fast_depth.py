# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""One pass over the LiDAR points for all cameras (FlashOCC porting kit).

PointToMultiViewDepth projects every point into every camera with a dozen
full-size tensor operations per camera, then keeps the points that land in the
image within the depth range. `project_and_keep` does the projection and that
filter in one compiled loop, with the same float32 operations in the same
order (torch's CPU matmul of an (N, 3) by a 3x3 is a plain sequential float32
dot product; checked at run time), and returns, per camera, the kept points
in their original order. `nearest_depth_maps` then keeps, per pixel, the
point upstream keeps: the first in argsort order of the float32 keys
`ranks + depth / 100.`. That is the smallest key unless points of different
depths share a pixel's smallest key (the keys quantise depth to up to 1.6 m);
only then does the sort's tie order decide, and torch's CPU argsort is not
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
    def _project_and_keep(pts, l2i, rot, tran, ds, width, height, dmin, dmax, out, counts):
        n_cams = l2i.shape[0]
        for c in range(n_cams):
            m = l2i[c]
            r = rot[c]
            t = tran[c]
            # depth after augmentation is the camera depth when the augmentation
            # leaves it alone (always, in FlashOCC): then skip points early
            depth_kept = r[2, 0] == 0 and r[2, 1] == 0 and r[2, 2] == 1 and t[2] == 0
            kept = 0
            for i in range(pts.shape[0]):
                x = pts[i, 0]
                y = pts[i, 1]
                z = pts[i, 2]
                # points_lidar[:, :3].matmul(lidar2img[:3, :3].T) + lidar2img[:3, 3]
                d = ((x * m[2, 0] + y * m[2, 1]) + z * m[2, 2]) + m[2, 3]
                if depth_kept and not (d < dmax and d >= dmin):
                    continue
                pu = ((x * m[0, 0] + y * m[0, 1]) + z * m[0, 2]) + m[0, 3]
                pv = ((x * m[1, 0] + y * m[1, 1]) + z * m[1, 2]) + m[1, 3]
                # torch.cat([p[:, :2] / p[:, 2:3], p[:, 2:3]], 1)
                u = pu / d
                v = pv / d
                # .matmul(post_rots[cid].T) + post_trans[cid:cid + 1, :]
                qu = ((u * r[0, 0] + v * r[0, 1]) + d * r[0, 2]) + t[0]
                qv = ((u * r[1, 0] + v * r[1, 1]) + d * r[1, 2]) + t[1]
                qd = ((u * r[2, 0] + v * r[2, 1]) + d * r[2, 2]) + t[2]
                # points2depthmap: torch.round(points[:, :2] / downsample), kept1
                cu = np.float32(np.rint(qu / ds))
                cv = np.float32(np.rint(qv / ds))
                if cu >= 0 and cu < width and cv >= 0 and cv < height and qd < dmax and qd >= dmin:
                    out[c, kept, 0] = cu
                    out[c, kept, 1] = cv
                    out[c, kept, 2] = qd
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

def project_and_keep(points, lidar2img, post_rots, post_trans, downsample, width, height, depth_range):
    """Per camera c, the (u, v, depth) float32 rows upstream's points2depthmap
    keeps in `coor[kept1], depth[kept1]`, in the same order.

    points (N, >=3) float32; lidar2img (C, 4, 4); post_rots (C, 3, 3);
    post_trans (C, 3); width/height already divided by downsample.
    Returns a list of C (K_c, 3) float32 numpy arrays.
    """
    f32 = np.float32
    pts = np.ascontiguousarray(points[:, :3], dtype=f32)
    l2i = np.ascontiguousarray(lidar2img, dtype=f32)
    n_cams = l2i.shape[0]
    out = np.empty((n_cams, pts.shape[0], 3), f32)
    counts = np.zeros(n_cams, np.int64)
    # torch compares/divides a float32 tensor with python scalars in float32
    _project_and_keep(pts, l2i, np.ascontiguousarray(post_rots, dtype=f32),
                      np.ascontiguousarray(post_trans, dtype=f32), f32(downsample), f32(width),
                      f32(height), f32(depth_range[0]), f32(depth_range[1]), out, counts)
    return [out[c, :counts[c]] for c in range(n_cams)]



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

def reference_keep(points, lidar2img, post_rot, post_tran, downsample, width, height, depth_range):
    """Upstream's tensor operations for one camera, up to `coor[kept1], depth[kept1]`."""
    import torch

    points_img = points[:, :3].matmul(lidar2img[:3, :3].T) + lidar2img[:3, 3].unsqueeze(0)
    points_img = torch.cat([points_img[:, :2] / points_img[:, 2:3], points_img[:, 2:3]], 1)
    points_img = points_img.matmul(post_rot.T) + post_tran.unsqueeze(0)
    coor = torch.round(points_img[:, :2] / downsample)
    depth = points_img[:, 2]
    kept1 = (coor[:, 0] >= 0) & (coor[:, 0] < width) & (coor[:, 1] >= 0) & (coor[:, 1] < height) & (
        depth < depth_range[1]) & (depth >= depth_range[0])
    return torch.cat([coor[kept1], depth[kept1, None]], 1)


_verified = None


def verified():
    """Once per process: the compiled pass against torch's operations on a
    random scene (a platform whose BLAS fused or reordered the 3x3 products
    would show here); False -> callers use upstream's code."""
    global _verified
    if _verified is None:
        _verified = numba is not None and _self_check()
        if numba is not None and not _verified:
            import warnings
            warnings.warn('fast_depth: compiled projection differs from torch on this platform; '
                          'PointToMultiViewDepth uses upstream code', stacklevel=2)
    return _verified


def _self_check():
    import torch

    gen = torch.Generator().manual_seed(0)
    points = (torch.rand(20000, 5, generator=gen) - 0.5) * torch.tensor([120., 120., 10., 1., 1.])
    cams, rots, trans = [], [], []
    for c in range(6):
        yaw = torch.tensor(c * np.pi / 3)
        world2cam = torch.eye(4)
        # camera looking along the rotated x axis, image axes (right, down, forward)
        fwd = torch.stack([torch.cos(yaw), torch.sin(yaw), torch.tensor(0.)])
        right = torch.stack([torch.sin(yaw), -torch.cos(yaw), torch.tensor(0.)])
        world2cam[:3, :3] = torch.stack([right, torch.tensor([0., 0., -1.]), fwd])
        world2cam[:3, 3] = torch.rand(3, generator=gen)
        intrin = torch.tensor([[1266.4, 0., 816.3, 0.], [0., 1266.4, 491.5, 0.], [0., 0., 1., 0.], [0, 0, 0, 1.]])
        cams.append(intrin.matmul(world2cam))
        angle = (torch.rand(1, generator=gen).item() - 0.5) * 0.2
        rot = torch.eye(3)
        rot[:2, :2] = torch.tensor([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]]) * 0.47
        rots.append(rot)
        trans.append(torch.tensor([-20.5, -160.25, 0.]))
    l2i, rot, tran = torch.stack(cams), torch.stack(rots), torch.stack(trans)
    got = project_and_keep(points.numpy(), l2i.numpy(), rot.numpy(), tran.numpy(), 1, 704, 256, (1.0, 45.0))
    for c in range(6):
        ref = reference_keep(points, l2i[c], rot[c], tran[c], 1, 704, 256, (1.0, 45.0))
        if ref.shape[0] == 0 or not torch.equal(ref, torch.from_numpy(got[c])):
            return False
    return True
