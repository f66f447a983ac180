"""Rays through the Occ3D grid: the first occupied voxel each ray meets, vectorised over rays.

The ground layer is a plane (every column holds a ground or object voxel in layer 2), so a ray
that meets nothing above it ends on z = 0.2. Above the ground the march is an exact voxel walk that
leaps over empty space: from a voxel at chessboard distance d from every occupied voxel, a step of
(d - 1) voxels cannot enter one, so only voxels next to an occupied one are walked one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..occ3d import FREE, GRID_LO, GRID_SHAPE, GROUND_LAYER, VOXEL

LO = np.array(GRID_LO)
SHAPE = np.array(GRID_SHAPE)
GROUND_TOP = GRID_LO[2] + (GROUND_LAYER + 1) * VOXEL
MAX_LEAP = 24  # voxels; distances are computed up to this
EPS = 1e-4  # metres past a voxel face, so the next lookup lands in the next voxel

# Ray outcomes: sky, a voxel above the ground layer, the ground layer, ground beyond the grid.
MISS, HIT, GROUND, FAR_GROUND = 0, 1, 2, 3


@dataclass
class Hits:
    t: np.ndarray  # (N,) distance to the hit along the unit ray (inf when it misses)
    voxel: np.ndarray  # (N,) flat index of the voxel hit, -1 if none (MISS, FAR_GROUND)
    axis: np.ndarray  # (N,) axis (0 x, 1 y, 2 z) of the voxel face the ray entered through
    kind: np.ndarray  # (N,) MISS, HIT, GROUND or FAR_GROUND


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3x3 (chessboard) dilation, separably along each axis."""
    out = mask.copy()
    for axis in range(3):
        src = out.copy()
        lead = [slice(None)] * 3
        lag = [slice(None)] * 3
        lead[axis], lag[axis] = slice(1, None), slice(None, -1)
        out[tuple(lead)] |= src[tuple(lag)]
        out[tuple(lag)] |= src[tuple(lead)]
    return out


def chessboard_distance(occupied: np.ndarray, cap: int) -> np.ndarray:
    """Per voxel, the chessboard distance to the nearest occupied voxel, at most cap."""
    dist = np.full(occupied.shape, cap, dtype=np.int16)
    reached = occupied.copy()
    dist[reached] = 0
    for d in range(1, cap):
        grown = dilate(reached)
        dist[grown & ~reached] = d
        reached = grown
    return dist


def flat_index(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
    return (i * SHAPE[1] + j) * SHAPE[2] + k


def ground_hits(origin: np.ndarray, dirs: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Flat index of the ground-layer voxel each ray reaches at distance t."""
    cell = np.floor((origin[:2] + t[:, None] * dirs[:, :2] - LO[:2]) / VOXEL).astype(np.int64)
    np.clip(cell, 0, SHAPE[:2] - 1, out=cell)
    return flat_index(cell[:, 0], cell[:, 1], GROUND_LAYER)


def face_distance(origin: np.ndarray, dirs: np.ndarray, voxel: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Distance along each ray to the face of `voxel` perpendicular to `axis` that faces the ray."""
    cell = np.stack(np.unravel_index(voxel, GRID_SHAPE), axis=1)
    rows = np.arange(len(voxel))
    d = dirs[rows, axis]
    plane = LO[axis] + VOXEL * (cell[rows, axis] + (d < 0))
    return (plane - origin[axis]) / d


class OccupancyGrid:
    def __init__(self, semantics: np.ndarray):
        self.semantics = semantics
        above = semantics != FREE
        above[:, :, :GROUND_LAYER + 1] = False  # the ground layer is handled as a plane
        self.above = above.ravel()
        self.leap = ((chessboard_distance(above, MAX_LEAP) - 1).clip(0) * VOXEL).ravel()

    def cast(self, origin: np.ndarray, dirs: np.ndarray) -> Hits:
        """First hits of unit rays `dirs` (N, 3) from `origin`, both in the ego frame; origin inside the grid."""
        n = len(dirs)
        dirs = np.where(dirs == 0, 1e-12, dirs)
        start = (origin - LO) / VOXEL
        per_metre = dirs / VOXEL  # grid cells travelled per metre along each axis
        inv = 1.0 / per_metre
        t_exit = np.min(np.maximum(-start * inv, (SHAPE - start) * inv), axis=1) - 1e-6
        with np.errstate(divide="ignore"):
            t_ground = np.where(dirs[:, 2] < 0, (GROUND_TOP - origin[2]) / dirs[:, 2], np.inf)
        hits = Hits(np.full(n, np.inf), np.full(n, -1, dtype=np.int64), np.full(n, 2, dtype=np.int8),
                    np.zeros(n, dtype=np.int8))

        # March state, one array per quantity, compacted as rays finish.
        ray = np.arange(n)
        t = np.zeros(n)
        t_end = np.minimum(t_exit, t_ground)
        p = [np.full(n, start[a]) for a in range(3)]
        d = [per_metre[:, a].copy() for a in range(3)]
        inv_d = [inv[:, a].copy() for a in range(3)]
        ahead = [(per_metre[:, a] > 0).astype(float) for a in range(3)]  # 1 where the next face is the upper one
        entered = np.full(n, 2, dtype=np.int8)
        while ray.size:
            cell = [np.floor(p[a]) for a in range(3)]
            flat = flat_index(*(c.astype(np.int64) for c in cell))
            going = t < t_end
            hit = self.above[np.where(going, flat, 0)] & going
            if hit.any():
                done = ray[hit]
                hits.voxel[done], hits.axis[done], hits.kind[done] = flat[hit], entered[hit], HIT
                going &= ~hit
            if not going.all():
                ray, t, t_end, entered, flat = ray[going], t[going], t_end[going], entered[going], flat[going]
                p, d, inv_d, ahead, cell = ([x[going] for x in group] for group in (p, d, inv_d, ahead, cell))
            to_face = [(cell[a] + ahead[a] - p[a]) * inv_d[a] for a in range(3)]
            nearest = np.minimum(np.minimum(to_face[0], to_face[1]), to_face[2])
            entered = np.where(nearest == to_face[0], 0, np.where(nearest == to_face[1], 1, 2)).astype(np.int8)
            step = np.maximum(self.leap[flat], nearest) + EPS
            t += step
            for a in range(3):
                p[a] += step * d[a]

        hit = hits.kind == HIT
        hits.t[hit] = face_distance(origin, dirs[hit], hits.voxel[hit], hits.axis[hit])
        ground = ~hit & (t_ground <= t_exit)
        hits.t[ground], hits.kind[ground] = t_ground[ground], GROUND
        hits.voxel[ground] = ground_hits(origin, dirs[ground], t_ground[ground])
        far = ~hit & ~ground & np.isfinite(t_ground)
        hits.t[far], hits.kind[far] = t_ground[far], FAR_GROUND
        return hits

    def cast_image(self, origin: np.ndarray, dirs: np.ndarray, height: int, width: int) -> Hits:
        """Hits of one camera's pixel rays (height * width, 3), row-major.

        Rays are cast on every other row and column; a pixel in between whose lattice neighbours all
        hit the same voxel face (or all the ground, the sky, the far ground) hits it too, as nothing
        narrower than two pixels could hide in between: from 640 px wide on, even the wide CAM_BACK
        sees the farthest voxel of the grid (57 m) 2.3 px wide. The other pixels are cast.
        """
        rows = np.unique(np.r_[0:height:2, height - 1])
        cols = np.unique(np.r_[0:width:2, width - 1])
        lattice = (rows[:, None] * width + cols[None, :]).ravel()
        coarse = self.cast(origin, dirs[lattice])
        key = np.where(coarse.kind == HIT, coarse.voxel * 3 + coarse.axis, -1 - coarse.kind.astype(np.int64))
        key = key.reshape(len(rows), len(cols))

        # Lattice neighbours of every pixel: the lattice row/column at or before it and at or after it.
        r0 = np.searchsorted(rows, np.arange(height), side="right") - 1
        r1 = np.searchsorted(rows, np.arange(height), side="left")
        c0 = np.searchsorted(cols, np.arange(width), side="right") - 1
        c1 = np.searchsorted(cols, np.arange(width), side="left")
        k00 = key[r0][:, c0]
        agree = (k00 == key[r0][:, c1]) & (k00 == key[r1][:, c0]) & (k00 == key[r1][:, c1])
        agree, k00 = agree.ravel(), k00.ravel()

        n = height * width
        hits = Hits(np.full(n, np.inf), np.full(n, -1, dtype=np.int64), np.full(n, 2, dtype=np.int8),
                    np.zeros(n, dtype=np.int8))
        cast = np.flatnonzero(~agree)
        exact = self.cast(origin, dirs[cast])
        for name in ("t", "voxel", "axis", "kind"):
            getattr(hits, name)[cast] = getattr(exact, name)
        face = np.flatnonzero(agree & (k00 >= 0))
        hits.voxel[face], hits.axis[face], hits.kind[face] = k00[face] // 3, k00[face] % 3, HIT
        hits.t[face] = face_distance(origin, dirs[face], hits.voxel[face], hits.axis[face])
        with np.errstate(divide="ignore"):
            t_ground = (GROUND_TOP - origin[2]) / dirs[:, 2]
        ground = np.flatnonzero(agree & (k00 == -1 - GROUND))
        hits.t[ground], hits.kind[ground] = t_ground[ground], GROUND
        hits.voxel[ground] = ground_hits(origin, dirs[ground], t_ground[ground])
        far = np.flatnonzero(agree & (k00 == -1 - FAR_GROUND))
        hits.t[far], hits.kind[far] = t_ground[far], FAR_GROUND
        return hits
