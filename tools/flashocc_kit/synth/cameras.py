"""The sensor rig: six nuScenes-like cameras and a 32-beam top LiDAR, in the ego frame.

Camera frames follow nuScenes: x right, y down, z forward; `rotation` maps camera coordinates to
ego coordinates (x forward, y left, z up), so it is what the infos store as sensor2ego.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..occ3d import CAMERAS
from .geometry import axis_rotation, yaw_matrix

# Approximately nuScenes' calibration at 1600x900: yaw (deg), position in the ego frame (m),
# focal length and principal point (px). CAM_BACK is the wide-angle one.
NOMINAL = {
    "CAM_FRONT_LEFT": (55.0, (1.52, 0.49, 1.51), 1272.6, 826.6, 479.8),
    "CAM_FRONT": (0.0, (1.70, 0.02, 1.51), 1266.4, 816.3, 491.5),
    "CAM_FRONT_RIGHT": (-55.0, (1.55, -0.49, 1.50), 1260.8, 807.9, 495.3),
    "CAM_BACK_LEFT": (110.0, (1.04, 0.48, 1.56), 1256.7, 792.1, 492.8),
    "CAM_BACK": (180.0, (0.03, 0.00, 1.58), 809.2, 829.2, 481.8),
    "CAM_BACK_RIGHT": (-110.0, (1.04, -0.48, 1.57), 1259.5, 807.3, 501.2),
}
NOMINAL_SIZE = (1600, 900)
# A level camera looking along ego +x: its x (right) is ego -y, its y (down) ego -z, its z ego +x.
LEVEL_FORWARD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

LIDAR_TRANSLATION = (0.943, 0.0, 1.84)
LIDAR_YAW = -np.pi / 2  # nuScenes' LIDAR_TOP has x to the right of the car and y forward
LIDAR_ELEVATIONS = np.linspace(-30.67, 10.67, 32)  # degrees, HDL-32E; ring 0 is the lowest beam
LIDAR_AZIMUTHS = 1084  # returns per ring and revolution, about nuScenes' 34k points per sweep


@dataclass(frozen=True)
class Camera:
    name: str
    width: int
    height: int
    intrinsic: np.ndarray  # (3, 3) at width x height
    rotation: np.ndarray  # (3, 3) camera -> ego
    translation: np.ndarray  # (3,) camera centre in the ego frame

    def pixel_rays(self) -> np.ndarray:
        """Unit directions in the ego frame through every pixel centre, (height * width, 3), row-major."""
        u, v = np.meshgrid(np.arange(self.width, dtype=float), np.arange(self.height, dtype=float))
        pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
        rays = pixels @ (self.rotation @ np.linalg.inv(self.intrinsic)).T
        rays /= np.sqrt(np.einsum("ij,ij->i", rays, rays))[:, None]
        return rays

    def project(self, points_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and depth along the optical axis (N,) of ego-frame points."""
        cam = (points_ego - self.translation) @ self.rotation
        depth = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (cam @ self.intrinsic.T)[:, :2] / depth[:, None]
        return uv, depth


@dataclass(frozen=True)
class Lidar:
    rotation: np.ndarray  # (3, 3) lidar -> ego
    translation: np.ndarray

    def beam_directions(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit directions in the ego frame (rings * azimuths, 3) and the ring index of each."""
        elevation = np.radians(LIDAR_ELEVATIONS)[:, None]
        azimuth = np.linspace(-np.pi, np.pi, LIDAR_AZIMUTHS, endpoint=False)[None, :]
        local = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth),
                                             np.cos(elevation) * np.sin(azimuth), np.sin(elevation)), axis=-1)
        rings = np.broadcast_to(np.arange(len(LIDAR_ELEVATIONS))[:, None], local.shape[:2])
        return local.reshape(-1, 3) @ self.rotation.T, rings.ravel()


def camera_rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Camera -> ego for a camera looking along `yaw` (ego frame), tilted by pitch/roll about its own axes."""
    return yaw_matrix(yaw) @ LEVEL_FORWARD @ axis_rotation(0, pitch) @ axis_rotation(2, roll)


def make_rig(width: int, height: int, rng: np.random.Generator) -> tuple[list[Camera], Lidar]:
    """The rig of one scene: nominal calibration plus a small per-scene jitter, like different logs."""
    sx, sy = width / NOMINAL_SIZE[0], height / NOMINAL_SIZE[1]
    cameras = []
    for name in CAMERAS:
        yaw, position, focal, cx, cy = NOMINAL[name]
        focal *= 1 + rng.uniform(-0.003, 0.003)
        intrinsic = np.array([[focal * sx, 0.0, cx * sx], [0.0, focal * sy, cy * sy], [0.0, 0.0, 1.0]])
        rotation = camera_rotation(np.radians(yaw + rng.uniform(-0.5, 0.5)), np.radians(rng.uniform(-0.5, 0.5)),
                                   np.radians(rng.uniform(-0.3, 0.3)))
        translation = np.array(position) + rng.uniform(-0.01, 0.01, 3)
        cameras.append(Camera(name, width, height, intrinsic, rotation, translation))
    lidar = Lidar(yaw_matrix(LIDAR_YAW + np.radians(rng.uniform(-0.2, 0.2))),
                  np.array(LIDAR_TRANSLATION) + rng.uniform(-0.005, 0.005, 3))
    return cameras, lidar
