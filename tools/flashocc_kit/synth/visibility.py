"""Occ3D's visibility masks: voxels some ray observed, up to and including the first one it hit.

Occupied voxels are observed when a ray hit them. A free voxel is observed when a ray passes
through it before its hit; this is tested on the voxel's centre: it projects into a camera pixel
(a LiDAR beam) whose ray ends farther away than the centre lies. Free voxels below the ground layer
are never observed: every ray meets the ground first.
"""

from __future__ import annotations

import numpy as np

from ..occ3d import FREE, GRID_LO, GRID_SHAPE, GROUND_LAYER, VOXEL
from .cameras import LIDAR_AZIMUTHS, LIDAR_ELEVATIONS, Camera, Lidar
from .raycast import GROUND, HIT, Hits
from .render import Sweep

HALF_DIAGONAL = VOXEL * np.sqrt(3) / 2


def free_above_ground(semantics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices and ego-frame centres (float32) of the free voxels above the ground layer."""
    free = semantics == FREE
    free[:, :, :GROUND_LAYER + 1] = False
    flat = np.flatnonzero(free.ravel())
    cells = np.stack(np.unravel_index(flat, GRID_SHAPE), axis=1)
    return flat, (np.array(GRID_LO) + VOXEL * (cells + 0.5)).astype(np.float32)


def hit_voxels(hits: Hits) -> np.ndarray:
    return hits.voxel[(hits.kind == HIT) | (hits.kind == GROUND)]


def in_sensor_frame(centres: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Ego-frame points (float32) in a sensor frame whose rotation/translation map it to the ego frame."""
    return centres @ rotation.astype(np.float32) - (translation @ rotation).astype(np.float32)


def camera_mask(semantics: np.ndarray, cameras: list[Camera], hits: list[Hits]) -> np.ndarray:
    observed = np.zeros(semantics.size, dtype=bool)
    flat, centres = free_above_ground(semantics)
    for camera, camera_hits in zip(cameras, hits):
        observed[hit_voxels(camera_hits)] = True
        local = in_sensor_frame(centres, camera.rotation, camera.translation)
        ahead = np.flatnonzero(local[:, 2] > 0.1)
        local = local[ahead]
        k = camera.intrinsic.astype(np.float32)
        u = np.rint(k[0, 0] * local[:, 0] / local[:, 2] + k[0, 2])
        v = np.rint(k[1, 1] * local[:, 1] / local[:, 2] + k[1, 2])
        seen = (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
        pixel = (v[seen] * camera.width + u[seen]).astype(np.int64)
        distance2 = np.einsum("ij,ij->i", local[seen], local[seen])
        observed[flat[ahead[seen]][distance2 < camera_hits.t[pixel] ** 2]] = True
    return observed.reshape(GRID_SHAPE).astype(np.uint8)


def lidar_mask(semantics: np.ndarray, lidar: Lidar, sweep: Sweep) -> np.ndarray:
    observed = np.zeros(semantics.size, dtype=bool)
    observed[hit_voxels(sweep.hits)] = True  # beams without a return observed nothing, like Occ3D's
    flat, centres = free_above_ground(semantics)
    local = in_sensor_frame(centres, lidar.rotation, lidar.translation)
    distance = np.sqrt(np.einsum("ij,ij->i", local, local))
    elevation = np.arcsin(local[:, 2] / distance)
    step = np.radians(LIDAR_ELEVATIONS[1] - LIDAR_ELEVATIONS[0])
    ring = np.rint((elevation - np.radians(LIDAR_ELEVATIONS[0])) / step).astype(np.int64)
    beam_elevation = np.radians(LIDAR_ELEVATIONS[0]) + ring * step
    # A beam passes through the voxel when it comes within the voxel's half-diagonal of the centre.
    near = np.flatnonzero((ring >= 0) & (ring < len(LIDAR_ELEVATIONS))
                          & (np.abs(elevation - beam_elevation) <= np.arctan2(HALF_DIAGONAL, distance)))
    azimuth = np.arctan2(local[near, 1], local[near, 0])
    column = np.rint((azimuth + np.pi) / (2 * np.pi) * LIDAR_AZIMUTHS).astype(np.int64) % LIDAR_AZIMUTHS
    observed[flat[near][distance[near] < sweep.ranges[ring[near], column]]] = True
    return observed.reshape(GRID_SHAPE).astype(np.uint8)
