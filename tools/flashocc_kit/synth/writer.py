"""One sample on disk (images, point cloud, Occ3D labels, their panoptic version) and its info dict, in
create_data_bevdet.py's format.

Every path in an info is os.path.join(<data root as the user gave it>, ...), like the converter's.
Files are written byte-reproducibly: the npz's zip entries carry a fixed date, unlike np.savez's.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..occ3d import CAMERAS, DET_CLASSES, LIDAR, PANOPTIC_DIR
from .cameras import Camera, Lidar
from .geometry import matrix_to_quaternion, wrap_angle, yaw_matrix

JPEG_QUALITY = 92
# The converter's camera order; PrepareImageInputs picks cameras by name, so only the pkl's bytes care.
CONVERTER_CAMERA_ORDER = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
                          "CAM_BACK_RIGHT")
assert sorted(CONVERTER_CAMERA_ORDER) == sorted(CAMERAS)
BOX_MARGIN = 0.3  # m; voxelised boxes reach past the annotated box by up to about this


def token(*parts: object) -> str:
    """A nuScenes-style 32-hex token, fixed by what it names."""
    return hashlib.md5(":".join(str(p) for p in ("flashocc-kit-synth", *parts)).encode()).hexdigest()


@dataclass(frozen=True)
class SampleNames:
    """Where one sample's files go, relative to the data root."""

    scene_name: str
    sample_token: str
    timestamp: int
    stem: str  # nuScenes-like file name stem, e.g. synth0-scene-synth0003

    def camera(self, cam: str) -> str:
        return os.path.join("samples", cam, f"{self.stem}__{cam}__{self.timestamp}.jpg")

    def lidar(self) -> str:
        return os.path.join("samples", LIDAR, f"{self.stem}__{LIDAR}__{self.timestamp}.pcd.bin")

    def occ_dir(self) -> str:
        return os.path.join("gts", self.scene_name, self.sample_token)

    def panoptic_dir(self) -> str:
        """The panoptic labels (occ_dir's plus `instances`), where --eval ray-iou reads them."""
        return os.path.join(PANOPTIC_DIR, self.scene_name, self.sample_token)


def write_bytes(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def encode_jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """What np.savez_compressed writes, minus the wall-clock dates in the zip entries."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            zf.writestr(entry, buf.getvalue())
    return out.getvalue()


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """How many ego-frame points (N, 3) fall in each box (M, 9: x, y, z, l, w, h, yaw, ...), with margin."""
    counts = np.zeros(len(boxes), dtype=np.int64)
    for i, (x, y, z, length, width, height, yaw) in enumerate(boxes[:, :7]):
        d = points - (x, y, z)
        c, s = np.cos(yaw), np.sin(yaw)
        inside = ((np.abs(c * d[:, 0] + s * d[:, 1]) <= length / 2 + BOX_MARGIN)
                  & (np.abs(-s * d[:, 0] + c * d[:, 1]) <= width / 2 + BOX_MARGIN)
                  & (np.abs(d[:, 2]) <= height / 2 + BOX_MARGIN))
        counts[i] = int(inside.sum())
    return counts


@dataclass(frozen=True)
class Pose:
    """The ego in the global frame at one key frame."""

    translation: np.ndarray  # (3,)
    yaw: float

    def rotation(self) -> np.ndarray:
        return yaw_matrix(self.yaw)


def sample_info(prefix: str, names: SampleNames, scene_token: str, pose: Pose, cameras: list[Camera], lidar: Lidar,
                boxes: np.ndarray, labels: np.ndarray, num_lidar_pts: np.ndarray) -> dict:
    """The info dict of one sample: create_data_bevdet.py's fields, after add_ann_adj_info."""

    def path(rel: str) -> str:
        return os.path.join(prefix, rel)

    def ego2global() -> tuple[list[float], list[float]]:  # fresh lists per use, so no objects are shared
        return [float(v) for v in pose.translation], matrix_to_quaternion(pose.rotation())

    by_name = {camera.name: camera for camera in cameras}
    cams = {}
    for cam in CONVERTER_CAMERA_ORDER:
        camera = by_name[cam]
        translation, rotation = ego2global()
        cams[cam] = {
            "data_path": path(names.camera(cam)),
            "type": cam,
            "sample_data_token": token(names.sample_token, cam),
            "sensor2ego_translation": [float(v) for v in camera.translation],
            "sensor2ego_rotation": matrix_to_quaternion(camera.rotation),
            "ego2global_translation": translation,
            "ego2global_rotation": rotation,
            "timestamp": names.timestamp,  # the rig is synchronous: one ego pose per key frame
            # Camera -> LiDAR, such that points_lidar = points_cam @ R.T + T (the converter's convention).
            "sensor2lidar_rotation": lidar.rotation.T @ camera.rotation,
            "sensor2lidar_translation": lidar.rotation.T @ (camera.translation - lidar.translation),
            "cam_intrinsic": camera.intrinsic.copy(),
        }

    # The converter's gt_* fields: boxes in the LiDAR frame, (x, y, z, l, w, h, yaw), names, velocity.
    lidar_yaw = float(np.arctan2(lidar.rotation[1, 0], lidar.rotation[0, 0]))
    centres = (boxes[:, :3] - lidar.translation) @ lidar.rotation
    velocity = boxes[:, 7:9] @ lidar.rotation[:2, :2]
    gt_boxes = np.concatenate([centres, boxes[:, 3:6], wrap_angle(boxes[:, 6:7] - lidar_yaw)], axis=1)
    valid = num_lidar_pts > 0  # no radar: valid_flag is num_lidar_pts + num_radar_pts > 0
    translation, rotation = ego2global()
    return {
        "lidar_path": path(names.lidar()),
        "token": names.sample_token,
        "sweeps": [],
        "cams": cams,
        "lidar2ego_translation": [float(v) for v in lidar.translation],
        "lidar2ego_rotation": matrix_to_quaternion(lidar.rotation),
        "ego2global_translation": translation,
        "ego2global_rotation": rotation,
        "timestamp": names.timestamp,
        "gt_boxes": gt_boxes.reshape(-1, 7),
        "gt_names": np.array([DET_CLASSES[i] for i in labels], dtype="<U20"),
        "gt_velocity": velocity.reshape(-1, 2),
        "num_lidar_pts": num_lidar_pts.astype(np.int64),
        "num_radar_pts": np.zeros(len(boxes), dtype=np.int64),
        "valid_flag": valid,
        # get_gt(): ego-frame (x, y, z, l, w, h, yaw, vx, vy) and class index, of boxes with points only.
        "ann_infos": ([box.copy() for box in boxes[valid]], [int(label) for label in labels[valid]]),
        "scene_token": scene_token,
        "scene_name": names.scene_name,
        "occ_path": path(names.occ_dir()),
    }
