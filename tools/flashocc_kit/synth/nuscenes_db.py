"""The nuScenes database of a generated set: <root>/<version>/*.json, the 13 tables the nuscenes-devkit loads,
so that `NuScenes(version, root)` reads the set and upstream's converter (create_nuscenes_infos, then
add_ann_adj_info) can make the info files from it.

Everything in the tables is what the generator rendered: a sample per key frame, a key-frame sample_data per
sensor and sample (the JPEGs and the .pcd.bin written), a scene's rig as its calibrated_sensor records, an
ego_pose per sample_data (the rig is synchronous: the key frame's pose), and the annotated boxes in the global
frame, chained per object across a scene so that the devkit's box_velocity gives the generated velocity.
Rotations and translations are computed by the very functions the infos' are, so both hold the same floats.
Same input, same bytes: sorted keys, floats as Python's shortest repr, fixed order, fixed PNG bytes.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..occ3d import CAMERAS, DET_CLASSES, LIDAR
from .cameras import Camera, Lidar
from .geometry import matrix_to_quaternion, yaw_matrix
from .writer import Pose, token

TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility")
CHANNELS = (LIDAR, *CAMERAS)
MAPS_DIR = "maps"
MAP_SIZE = 16  # px; the semantic prior is not rendered, the devkit only needs the file

# nuScenes' 23 object categories (v1.0's category.json), the names create_data_bevdet.py maps from.
CATEGORIES = (
    ("animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.construction_worker", "Construction worker"),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene in order to redirect traffic."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans."),
    ("vehicle.construction", "Vehicles primarily designed for construction."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly."),
    ("vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo including pick-ups, lorrys, trucks."),
)
# Detection class (DET_CLASSES) -> the category its boxes are annotated with; create_data_bevdet.py's
# map_name_from_general_to_detection and mmdet3d's NuScenesDataset.NameMapping map each back.
DETECTION_CATEGORY = {
    "car": "vehicle.car", "truck": "vehicle.truck", "construction_vehicle": "vehicle.construction",
    "bus": "vehicle.bus.rigid", "trailer": "vehicle.trailer", "barrier": "movable_object.barrier",
    "motorcycle": "vehicle.motorcycle", "bicycle": "vehicle.bicycle", "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
}
assert sorted(DETECTION_CATEGORY) == sorted(DET_CLASSES)
ATTRIBUTES = (
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.moving", "The human is moving."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
)
# nuScenes' visibility levels (their tokens are these digits): share of the object visible in the images.
VISIBILITY = (("1", "v0-40", "visibility of whole object is between 0 and 40%"),
              ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
              ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
              ("4", "v80-100", "visibility of whole object is between 80 and 100%"))
MOVING = 0.2  # m/s; generated road users stand still or move at 0.8 m/s and more


@dataclass(frozen=True)
class SceneEntry:
    """One generated scene: its names and its rig."""

    index: int
    name: str  # an official split's scene name
    token: str
    logfile: str  # also the stem of its files' names, as in nuScenes
    cameras: list[Camera]
    lidar: Lidar


@dataclass(frozen=True)
class KeyFrame:
    """What the tables need of one rendered sample (the worker sends it with the sample's info)."""

    scene_index: int
    token: str
    timestamp: int
    pose: Pose  # ego -> global
    files: dict[str, str]  # channel -> the file written, relative to the data root
    boxes: np.ndarray  # (N, 9) ego frame: x, y, z, l, w, h, yaw, vx, vy
    labels: np.ndarray  # (N,) index into DET_CLASSES
    instances: np.ndarray  # (N,) the object's row in its world: the same object in every key frame
    num_lidar_pts: np.ndarray  # (N,) as in the infos


def sample_data_token(sample_token: str, channel: str) -> str:
    """As writer.sample_info names the cameras' sample_data_token."""
    return token(sample_token, channel)


def calibrated_sensor_token(seed: int, scene_index: int, channel: str) -> str:
    return token(seed, "calibrated_sensor", scene_index, channel)


def fixed_token(table: str, name: str) -> str:
    """Tokens of the tables every set shares (sensor, category, attribute): independent of the seed."""
    return token(table, name)


def attributes(detection: str, speed: float) -> list[str]:
    moving = speed > MOVING
    if detection == "pedestrian":
        return ["pedestrian.moving" if moving else "pedestrian.standing"]
    if detection in ("bicycle", "motorcycle"):
        return ["cycle.with_rider" if moving else "cycle.without_rider"]
    if detection in ("barrier", "traffic_cone"):
        return []  # nuScenes gives movable objects no attribute
    return ["vehicle.moving" if moving else "vehicle.parked"]


def visibility(num_lidar_pts: int) -> str:
    """The generator renders no per-object visibility: an object no LiDAR point reaches is taken as hidden."""
    return "4" if num_lidar_pts > 0 else "1"


def floats(values) -> list[float]:
    return [float(v) for v in values]


def global_boxes(frame: KeyFrame) -> tuple[np.ndarray, np.ndarray]:
    """Centres (N, 3) and yaws (N,) of the frame's boxes in the global frame (ego z = global z: flat world)."""
    c, s = np.cos(frame.pose.yaw), np.sin(frame.pose.yaw)
    x, y, z = frame.boxes[:, 0], frame.boxes[:, 1], frame.boxes[:, 2]
    t = frame.pose.translation
    # Elementwise rather than a matrix product: no BLAS, so no thread count can change a bit.
    centres = np.stack([t[0] + c * x - s * y, t[1] + s * x + c * y, t[2] + z], axis=1)
    return centres, frame.pose.yaw + frame.boxes[:, 6]


def link(records: list[dict]) -> None:
    """prev/next tokens along records, in order."""
    for before, after in zip(records, records[1:]):
        before["next"], after["prev"] = after["token"], before["token"]


def build_tables(seed: int, size: tuple[int, int], scenes: list[SceneEntry],
                 frames: list[KeyFrame]) -> dict[str, list[dict]]:
    """The 13 tables, each a list of records, for scenes and their key frames (size: the images' width, height)."""
    width, height = size
    by_scene: dict[int, list[KeyFrame]] = {scene.index: [] for scene in scenes}
    for frame in sorted(frames, key=lambda f: (f.scene_index, f.timestamp)):
        by_scene[frame.scene_index].append(frame)
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}

    tables["sensor"] = [{"token": fixed_token("sensor", channel), "channel": channel,
                         "modality": "lidar" if channel == LIDAR else "camera"} for channel in CHANNELS]
    tables["category"] = [{"token": fixed_token("category", name), "name": name, "description": text}
                          for name, text in CATEGORIES]
    tables["attribute"] = [{"token": fixed_token("attribute", name), "name": name, "description": text}
                           for name, text in ATTRIBUTES]
    tables["visibility"] = [{"token": tok, "level": level, "description": text} for tok, level, text in VISIBILITY]
    map_token = token(seed, "map")
    tables["map"] = [{"token": map_token, "category": "semantic_prior", "filename": map_filename(map_token),
                      "log_tokens": [token(seed, "log", scene.index) for scene in scenes]}]

    instances: dict[tuple[int, int], list[dict]] = {}  # (scene, object) -> its annotations, in time order
    categories: dict[tuple[int, int], str] = {}
    for scene in scenes:
        scene_frames = by_scene[scene.index]
        if not scene_frames:
            raise ValueError(f"scene {scene.name} has no key frames")
        log_token = token(seed, "log", scene.index)
        date = datetime.fromtimestamp(scene_frames[0].timestamp / 1e6, tz=timezone.utc).strftime("%Y-%m-%d")
        tables["log"].append({"token": log_token, "logfile": scene.logfile, "vehicle": "synth",
                              "date_captured": date, "location": "synthetic"})
        tables["scene"].append({
            "token": scene.token, "name": scene.name, "log_token": log_token, "nbr_samples": len(scene_frames),
            "first_sample_token": scene_frames[0].token, "last_sample_token": scene_frames[-1].token,
            "description": f"synthetic street scene {scene.index} (flashocc-kit synth, seed {seed})"})
        for channel, calibration in rig(scene).items():
            tables["calibrated_sensor"].append({"token": calibrated_sensor_token(seed, scene.index, channel),
                                                "sensor_token": fixed_token("sensor", channel), **calibration})

        samples = [{"token": f.token, "timestamp": int(f.timestamp), "scene_token": scene.token, "prev": "",
                    "next": ""} for f in scene_frames]
        link(samples)
        tables["sample"].extend(samples)
        chains: dict[str, list[dict]] = {channel: [] for channel in CHANNELS}
        for frame in scene_frames:
            translation, rotation = floats(frame.pose.translation), matrix_to_quaternion(frame.pose.rotation())
            for channel in CHANNELS:
                sd_token = sample_data_token(frame.token, channel)
                camera = channel != LIDAR
                chains[channel].append({
                    "token": sd_token, "sample_token": frame.token, "ego_pose_token": sd_token,
                    "calibrated_sensor_token": calibrated_sensor_token(seed, scene.index, channel),
                    "timestamp": int(frame.timestamp), "fileformat": "jpg" if camera else "pcd",
                    "is_key_frame": True, "height": height if camera else 0, "width": width if camera else 0,
                    "filename": frame.files[channel].replace(os.sep, "/"), "prev": "", "next": ""})
                # nuScenes gives each sample_data its own ego pose, under the same token.
                tables["ego_pose"].append({"token": sd_token, "timestamp": int(frame.timestamp),
                                           "translation": list(translation), "rotation": list(rotation)})
            centres, yaws = global_boxes(frame)
            for i, row in enumerate(frame.instances):
                detection = DET_CLASSES[int(frame.labels[i])]
                box = frame.boxes[i]
                annotation = {
                    "token": token(frame.token, "sample_annotation", int(row)), "sample_token": frame.token,
                    "instance_token": token(seed, "instance", scene.index, int(row)),
                    "visibility_token": visibility(int(frame.num_lidar_pts[i])),
                    "attribute_tokens": [fixed_token("attribute", name)
                                         for name in attributes(detection, float(np.hypot(box[7], box[8])))],
                    "translation": floats(centres[i]),
                    "size": floats(box[[4, 3, 5]]),  # nuScenes' w, l, h
                    "rotation": matrix_to_quaternion(yaw_matrix(float(yaws[i]))),
                    "num_lidar_pts": int(frame.num_lidar_pts[i]), "num_radar_pts": 0, "prev": "", "next": ""}
                # In the frame's box order, as the infos list them (sample['anns'] follows the table's order).
                tables["sample_annotation"].append(annotation)
                instances.setdefault((scene.index, int(row)), []).append(annotation)
                categories[scene.index, int(row)] = DETECTION_CATEGORY[detection]
        for channel in CHANNELS:
            link(chains[channel])
            tables["sample_data"].extend(chains[channel])

    for key, chain in instances.items():
        link(chain)
        tables["instance"].append({"token": chain[0]["instance_token"],
                                   "category_token": fixed_token("category", categories[key]),
                                   "nbr_annotations": len(chain), "first_annotation_token": chain[0]["token"],
                                   "last_annotation_token": chain[-1]["token"]})
    return tables


def rig(scene: SceneEntry) -> dict[str, dict]:
    """calibrated_sensor's fields per channel, as writer.sample_info stores sensor2ego and lidar2ego."""
    out = {LIDAR: {"translation": floats(scene.lidar.translation),
                   "rotation": matrix_to_quaternion(scene.lidar.rotation), "camera_intrinsic": []}}
    for camera in scene.cameras:
        out[camera.name] = {"translation": floats(camera.translation),
                            "rotation": matrix_to_quaternion(camera.rotation),
                            "camera_intrinsic": [floats(r) for r in camera.intrinsic]}
    return {channel: out[channel] for channel in CHANNELS}


def map_filename(map_token: str) -> str:
    return f"{MAPS_DIR}/{map_token}.png"


def table_bytes(records: list[dict]) -> bytes:
    # indent=0 like nuScenes' own files; no NaN may slip through (json would write a non-standard token).
    return (json.dumps(records, indent=0, sort_keys=True, allow_nan=False) + "\n").encode()


def png_bytes(gray: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG, written here so that its bytes depend on nothing but the pixels and zlib."""
    height, width = gray.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\0" + gray[row].astype(np.uint8).tobytes() for row in range(height))  # filter 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_database(root: Path, version: str, seed: int, size: tuple[int, int], scenes: list[SceneEntry],
                   frames: list[KeyFrame]) -> dict[str, int]:
    """Write <root>/<version>/<table>.json and the map's PNG; returns each table's record count."""
    tables = build_tables(seed, size, scenes, frames)
    table_root = root / version
    table_root.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        (table_root / f"{name}.json").write_bytes(table_bytes(tables[name]))
    for record in tables["map"]:
        path = root / record["filename"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(np.zeros((MAP_SIZE, MAP_SIZE), dtype=np.uint8)))
    return {name: len(records) for name, records in tables.items()}
