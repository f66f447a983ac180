"""Camera images and LiDAR sweeps of a voxelised frame, from the rays' first hits.

Each class has one colour; shading (sun and face orientation, a per-voxel tint, darker voxel
edges, distance) only scales it, so a pixel's chromaticity still names its class, which is what
validate.py's geometric check relies on. Mild noise comes on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..occ3d import GRID_LO, OCC, OCC_CLASSES, VOXEL
from .cameras import LIDAR_AZIMUTHS, LIDAR_ELEVATIONS, Camera, Lidar
from .raycast import FAR_GROUND, GROUND, HIT, MISS, Hits, OccupancyGrid

# RGB per class, chosen so any two (and sky, far ground) differ in chromaticity by at least 11 degrees
# as RGB vectors, 13 for the frequent ground and scenery classes.
COLOURS = {
    "others": (136, 20, 230), "barrier": (210, 245, 10), "bicycle": (243, 69, 216), "bus": (200, 140, 20),
    "car": (10, 130, 232), "construction_vehicle": (118, 221, 5), "motorcycle": (173, 10, 184),
    "pedestrian": (226, 10, 20), "traffic_cone": (251, 106, 5), "trailer": (20, 218, 110), "truck": (15, 233, 197),
    "driveable_surface": (110, 110, 110), "other_flat": (143, 92, 228), "sidewalk": (225, 215, 120),
    "terrain": (84, 172, 107), "manmade": (215, 70, 70), "vegetation": (31, 134, 24), "free": (0, 0, 0),
}
SKY_HORIZON, SKY_ZENITH = (110, 198, 247), (61, 80, 255)
FAR_GROUND_COLOUR = (185, 110, 110)  # ground beyond the grid, not labelled
PALETTE = np.array([COLOURS[name] for name in OCC_CLASSES], dtype=np.float32)
# Typical LiDAR intensity (0-255) per class; retro-reflective cones and barriers stand out.
INTENSITY = np.array([30, 120, 40, 50, 35, 45, 40, 25, 150, 45, 45, 8, 12, 20, 15, 30, 18, 0], dtype=np.float32)
LIDAR_MAX_RANGE = 70.0
# Cast every pixel below this width; above it, a lattice of every other pixel plus the edges (raycast.py).
LATTICE_MIN_WIDTH = 640


@dataclass(frozen=True)
class Look:
    """Per-scene lighting: the sun direction in the ego frame and an exposure factor."""

    sun: np.ndarray
    exposure: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Look:
        azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(25), np.radians(65))
        sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        return cls(sun, float(rng.uniform(0.9, 1.05)))


def voxel_tint(voxel: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random brightness in [0.86, 1] per voxel, so surfaces have texture."""
    mixed = (voxel.astype(np.uint64) * np.uint64(2654435761) + np.uint64(salt)) % np.uint64(1 << 32)
    return (0.86 + 0.14 * (mixed.astype(np.float64) / 2**32)).astype(np.float32)


def shade(grid: OccupancyGrid, origin: np.ndarray, dirs: np.ndarray, hits: Hits, look: Look, salt: int) -> np.ndarray:
    """Linear RGB (N, 3) float32 of the rays' hits."""
    colour = np.empty((len(dirs), 3), dtype=np.float32)
    idx = np.flatnonzero((hits.kind == HIT) | (hits.kind == GROUND))
    axis = np.where(hits.kind[idx] == GROUND, 2, hits.axis[idx])
    rows = np.arange(len(idx))
    # The face's outward normal is -sign(direction) along its axis; only its dot with the sun matters.
    facing = -np.sign(dirs[idx, axis]) * look.sun[axis]
    light = 0.55 + 0.45 * np.clip(facing, 0, None)
    # Darker lines along voxel edges: the hit point's position within the face it lies on.
    point = (origin + hits.t[idx, None] * dirs[idx] - np.array(GRID_LO)) * (1 / VOXEL)
    frac = np.abs(point - np.rint(point))  # distance to the nearest voxel boundary, per axis
    frac[rows, axis] = 1.0
    edge = np.where(frac.min(axis=1) < 0.05, 0.8, 1.0)
    fade = 1 - 0.3 * np.clip(hits.t[idx] * (1 / 60), 0, 1)
    factor = (light * edge * fade * look.exposure).astype(np.float32) * voxel_tint(hits.voxel[idx], salt)
    colour[idx] = PALETTE[grid.semantics.ravel()[hits.voxel[idx]]] * factor[:, None]

    far = hits.kind == FAR_GROUND
    far_light = 0.7 * (0.55 + 0.45 * look.sun[2]) * look.exposure
    colour[far] = np.array(FAR_GROUND_COLOUR, np.float32) * np.float32(far_light)
    sky = hits.kind == MISS
    up = np.clip(dirs[sky, 2] * 4, 0, 1).astype(np.float32)[:, None]
    sky_colour = (1 - up) * np.array(SKY_HORIZON, np.float32) + up * np.array(SKY_ZENITH, np.float32)
    colour[sky] = sky_colour * np.float32(look.exposure)
    return colour


def render_camera(grid: OccupancyGrid, camera: Camera, look: Look, rng: np.random.Generator,
                  salt: int) -> tuple[np.ndarray, Hits]:
    """The RGB image (height, width, 3) uint8 and the hits of its pixel rays."""
    dirs = camera.pixel_rays()
    if camera.width >= LATTICE_MIN_WIDTH:
        hits = grid.cast_image(camera.translation, dirs, camera.height, camera.width)
    else:
        hits = grid.cast(camera.translation, dirs)
    colour = shade(grid, camera.translation, dirs, hits, look, salt)
    colour += rng.standard_normal(colour.shape, dtype=np.float32) * np.float32(2.0)
    image = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    return image.reshape(camera.height, camera.width, 3), hits


@dataclass
class Sweep:
    points: np.ndarray  # (N, 5) float32 in the LiDAR frame: x, y, z, intensity, ring
    points_ego: np.ndarray  # (N, 3) the same points in the ego frame
    hits: Hits  # of every beam, (rings * azimuths,)
    ranges: np.ndarray  # (rings, azimuths) distance of each beam's return, 0 where none


def scan_lidar(grid: OccupancyGrid, lidar: Lidar, rng: np.random.Generator) -> Sweep:
    dirs, rings = lidar.beam_directions()
    hits = grid.cast(lidar.translation, dirs)
    returns = ((hits.kind == HIT) | (hits.kind == GROUND) | (hits.kind == FAR_GROUND)) & (hits.t <= LIDAR_MAX_RANGE)
    ranges = np.where(returns, hits.t, 0.0).reshape(len(LIDAR_ELEVATIONS), LIDAR_AZIMUTHS)
    idx = np.flatnonzero(returns)
    distance = hits.t[idx] + rng.normal(0, 0.02, len(idx))
    points_ego = lidar.translation + distance[:, None] * dirs[idx]
    cls = np.where(hits.kind[idx] == FAR_GROUND, OCC["terrain"], grid.semantics.ravel()[np.maximum(hits.voxel[idx], 0)])
    intensity = np.clip(INTENSITY[cls] * rng.uniform(0.7, 1.3, len(idx)), 0, 255)
    local = (points_ego - lidar.translation) @ lidar.rotation
    points = np.column_stack([local, intensity, rings[idx]]).astype(np.float32)
    return Sweep(points, points_ego, hits, ranges)
