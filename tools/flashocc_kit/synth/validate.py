"""Reload a written data set the way FlashOCC does and check it: fields, files, shapes, geometry.

The geometric check takes, per camera, the voxel faces it sees whole (clear lines of sight to the
face from the camera centre in the infos) and large enough, projects them with the stored
intrinsics and sensor2ego (read with pyquaternion, as PrepareImageInputs reads them), and asks
whether the image there shows the voxel's class colour. Wrong conventions (ego2sensor stored as
sensor2ego, a transposed rotation, camera axes mixed up, intrinsics of another size) and swapped
cameras put the faces onto other things and the agreement collapses.

The nuScenes tables are checked against the infos: every sample there, its scene named from the version's
official split, one key-frame sample_data per sensor naming the file the info names (and the file there),
the same calibration, ego pose and annotation count; loaded with the nuscenes-devkit itself when it imports.

Each sample's panoptic labels (occ3d_panoptic/, what --eval ray-iou reads) must hold its gts labels as they are
and instance ids that each name one object of one thing class.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
from pyquaternion import Quaternion

from ..errors import KitError
from ..occ3d import (
    CAMERAS,
    DET_CLASSES,
    FREE,
    GRID_LO,
    GRID_SHAPE,
    LIDAR,
    OCC_CLASSES,
    VOXEL,
    info_file,
    panoptic_labels,
)
from . import nuscenes_db
from .render import FAR_GROUND_COLOUR, PALETTE, SKY_HORIZON, SKY_ZENITH
from .scene import THINGS
from .splits import DEVKIT_SPLIT, VERSIONS, scene_names

INFO_KEYS = ("lidar_path", "token", "sweeps", "cams", "lidar2ego_translation", "lidar2ego_rotation",
             "ego2global_translation", "ego2global_rotation", "timestamp", "gt_boxes", "gt_names", "gt_velocity",
             "num_lidar_pts", "num_radar_pts", "valid_flag", "ann_infos", "scene_token", "scene_name", "occ_path")
CAM_KEYS = ("data_path", "type", "sample_data_token", "sensor2ego_translation", "sensor2ego_rotation",
            "ego2global_translation", "ego2global_rotation", "timestamp", "sensor2lidar_rotation",
            "sensor2lidar_translation", "cam_intrinsic")
LABEL_KEYS = ("semantics", "mask_lidar", "mask_camera")
# Measured: correct geometry scores 0.9 to 1 (0.97 and up from 704 px); wrong conventions about 0;
# two swapped cameras mostly under 0.5 and at most about 0.8 when both face alike scenery (walls).
MIN_AGREEMENT = 0.85
MIN_FACES = 40  # a camera seeing fewer faces (a bus filling its view, say) is not judged
MIN_CAMERAS = 3  # judged cameras a sample needs
GEOMETRY_SAMPLES = 4  # samples tried per split, for one with enough judged cameras
MIN_FACE_PX = 4  # faces narrower than this (far, or seen edge-on) are not judged
LOS_STEP = 0.1  # m, sampling of a line of sight
FACE_INSET = 0.01  # m: a face's point lies this far inside its voxel
FACE_PROBE = 0.15  # m from a face's centre: points whose lines of sight must be clear too
MAX_PROBLEMS = 20
# Candidate colours a pixel can be: the classes, then sky and the ground beyond the grid.
CANDIDATES = np.vstack([PALETTE[:FREE], np.array([SKY_HORIZON, SKY_ZENITH, FAR_GROUND_COLOUR], np.float32)])


class Problems(list):
    def add(self, text: str) -> None:
        self.append(text)


def stored_to_local(stored: str, files_root: Path, prefix: str) -> Path | None:
    """The file a stored path names, found under files_root; None if it does not start with prefix."""
    norm_prefix = os.path.normpath(prefix)
    norm = os.path.normpath(stored)
    if norm != norm_prefix and not norm.startswith(norm_prefix.rstrip(os.sep) + os.sep):
        return None
    return files_root / os.path.relpath(norm, norm_prefix)


def cam_to_ego(cam_info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation exactly as PrepareImageInputs.get_sensor_transforms builds sensor2ego."""
    w, x, y, z = cam_info["sensor2ego_rotation"]
    return Quaternion(w, x, y, z).rotation_matrix, np.asarray(cam_info["sensor2ego_translation"], dtype=float)


def classify(pixels: np.ndarray) -> np.ndarray:
    """Index into CANDIDATES whose colour, scaled by the best brightness factor, is nearest each pixel."""
    norms = (CANDIDATES ** 2).sum(axis=1)
    scale = np.clip(pixels @ CANDIDATES.T / norms, 0.15, 1.4)  # (N, K)
    residual = ((pixels[:, None, :] - scale[:, :, None] * CANDIDATES[None]) ** 2).sum(axis=2)
    return residual.argmin(axis=1)


def exposed_faces(semantics: np.ndarray, eye: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces of occupied voxels that face the eye and border a free voxel.

    Returns each face's voxel (flat index), its centre moved FACE_INSET into the voxel, and its axis.
    """
    occupied = semantics != FREE
    flat = np.flatnonzero(occupied)
    cells = np.stack(np.unravel_index(flat, GRID_SHAPE), axis=1)
    centres = np.array(GRID_LO) + VOXEL * (cells + 0.5)
    owners, points, axes = [], [], []
    for axis in range(3):
        side = np.sign(eye[axis] - centres[:, axis]).astype(np.int64)
        neighbour = cells.copy()
        neighbour[:, axis] += side
        outside = (neighbour[:, axis] < 0) | (neighbour[:, axis] >= GRID_SHAPE[axis])
        np.clip(neighbour[:, axis], 0, GRID_SHAPE[axis] - 1, out=neighbour[:, axis])
        exposed = (side != 0) & (outside | ~occupied[tuple(neighbour.T)])
        point = centres[exposed].copy()
        point[:, axis] += side[exposed] * (VOXEL / 2 - FACE_INSET)
        owners.append(flat[exposed])
        points.append(point)
        axes.append(np.full(len(point), axis))
    return np.concatenate(owners), np.concatenate(points), np.concatenate(axes)


def unobstructed(occupied: np.ndarray, owner: np.ndarray, points: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Whether the segment from eye to each point crosses no occupied voxel but its owner (sampled every 0.1 m)."""
    offset = points - eye
    length = np.linalg.norm(offset, axis=1)
    unit = offset / length[:, None]
    clear = np.ones(len(owner), dtype=bool)
    active = np.arange(len(owner))
    distance = LOS_STEP
    while active.size:
        active = active[length[active] > distance]
        point = eye + distance * unit[active]
        cell = np.floor((point - GRID_LO) / VOXEL).astype(np.int64)
        inside = ((cell >= 0) & (cell < GRID_SHAPE)).all(axis=1)
        here = np.ravel_multi_index(tuple(np.clip(cell, 0, np.array(GRID_SHAPE) - 1).T), GRID_SHAPE)
        blocked = inside & occupied[here] & (here != owner[active])
        clear[active[blocked]] = False
        active = active[~blocked]
        distance += LOS_STEP
    return clear


def camera_agreement(cam_info: dict, image: np.ndarray, semantics: np.ndarray) -> tuple[float, int]:
    """Share of the voxel faces the camera sees whose pixel shows their class; and how many were judged."""
    height, width = image.shape[:2]
    rotation, translation = cam_to_ego(cam_info)
    intrinsic = np.asarray(cam_info["cam_intrinsic"], dtype=float)

    def project(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cam = (points - translation) @ rotation
        with np.errstate(divide="ignore", invalid="ignore"):
            return (cam @ intrinsic.T)[:, :2] / cam[:, 2:3], cam[:, 2]

    owner, points, axis = exposed_faces(semantics, translation)
    uv, depth = project(points)
    # Judge faces that look at least MIN_FACE_PX across both ways, so the 3x3 pixels sampled lie on them.
    size = np.full(len(points), np.inf)
    for other in range(1, 3):
        step = np.zeros((len(points), 3))
        step[np.arange(len(points)), (axis + other) % 3] = VOXEL / 2
        (a, da), (b, db) = project(points + step), project(points - step)
        size = np.minimum(size, np.where((da > 0) & (db > 0), np.linalg.norm(a - b, axis=1), 0))
    u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
    keep = np.flatnonzero((depth > 0.5) & (size >= MIN_FACE_PX) & (u >= 1) & (u < width - 1) & (v >= 1)
                          & (v < height - 1))
    # Seen whole, near enough: the lines of sight to the face's centre and to four points around it are clear
    # (a face half hidden behind a nearer object's edge would be judged on that object's pixels).
    occupied = semantics.ravel() != FREE
    for du, dv in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        probe = points[keep].copy()
        rows = np.arange(len(keep))
        probe[rows, (axis[keep] + 1) % 3] += du * FACE_PROBE
        probe[rows, (axis[keep] + 2) % 3] += dv * FACE_PROBE
        keep = keep[unobstructed(occupied, owner[keep], probe, translation)]
    u, v = u[keep].astype(np.int64), v[keep].astype(np.int64)
    pixels = sum(image[v + dv, u + du].astype(np.float32) for dv in (-1, 0, 1) for du in (-1, 0, 1)) / 9
    agree = classify(pixels) == semantics.ravel()[owner[keep]]
    return (float(agree.mean()) if agree.size else 0.0), int(agree.size)


def check_geometry(infos: list[dict], files_root: Path, prefix: str, problems: Problems) -> dict[str, float]:
    """Judge the cameras of the first sample (of the first few) in which enough cameras see enough voxels."""
    for info in infos[:GEOMETRY_SAMPLES]:
        labels = np.load(stored_to_local(os.path.join(info["occ_path"], "labels.npz"), files_root, prefix))
        scores = {}
        for cam in CAMERAS:
            path = stored_to_local(info["cams"][cam]["data_path"], files_root, prefix)
            image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            score, judged = camera_agreement(info["cams"][cam], image, labels["semantics"])
            if judged >= MIN_FACES:
                scores[cam] = score
        if len(scores) < MIN_CAMERAS:
            continue
        for cam, score in scores.items():
            if score < MIN_AGREEMENT:
                problems.add(f"sample {info['token']} {cam}: only {score:.0%} of the voxel faces it sees project onto "
                             f"pixels of their class (need {MIN_AGREEMENT:.0%}): the camera's intrinsics or "
                             "sensor2ego do not match its image")
        return scores
    problems.add(f"geometry: in none of the first {GEOMETRY_SAMPLES} samples do {MIN_CAMERAS} cameras see "
                 f"{MIN_FACES} voxel faces; cannot check the extrinsics")
    return {}


def check_panoptic(name: str, labels, panoptic, path: Path, problems: Problems) -> None:
    """The panoptic labels: the gts' arrays as they are, plus `instances` numbering the thing objects 1..n, each
    id one thing class, stuff and free 0 (what SparseOcc's gen_instance_info.py writes and RayPQ reads)."""
    differ = [key for key in LABEL_KEYS if key not in panoptic or not np.array_equal(panoptic[key], labels[key])]
    if differ:
        problems.add(f"sample {name}: {path}: {', '.join(differ)} missing or not the gts' labels.npz's")
    if "instances" not in panoptic or panoptic["instances"].shape != GRID_SHAPE or \
            panoptic["instances"].dtype != np.uint8:
        problems.add(f"sample {name}: {path}: 'instances' must be uint8 {GRID_SHAPE}")
        return
    instances, semantics = panoptic["instances"], labels["semantics"]
    thing = np.isin(semantics, THINGS)
    if instances[~thing].any():
        stuff = sorted({OCC_CLASSES[c] for c in np.unique(semantics[~thing & (instances > 0)])})
        problems.add(f"sample {name}: {path}: instance ids on voxels of {', '.join(stuff)} (stuff: must be 0)")
    if not instances[thing].all():
        problems.add(f"sample {name}: {path}: thing voxels without an instance id")
    pairs = np.unique(instances[thing].astype(np.int64) * 256 + semantics[thing])  # (id, class) pairs
    ids = pairs // 256
    split = np.unique(ids[1:][ids[1:] == ids[:-1]])
    if split.size:
        problems.add(f"sample {name}: {path}: instance ids of several classes: {', '.join(map(str, split[:5]))}")
    used = np.unique(ids[ids > 0])
    if not np.array_equal(used, np.arange(1, len(used) + 1)):
        problems.add(f"sample {name}: {path}: instance ids are not 1..{len(used)}")


def check_info(info: dict, files_root: Path, prefix: str, problems: Problems, size: tuple[int, int] | None) -> None:
    name = info.get("token", "?")
    missing = [key for key in INFO_KEYS if key not in info]
    if missing:
        problems.add(f"sample {name}: missing keys {missing}")
        return
    files = {"lidar": info["lidar_path"], "labels": os.path.join(info["occ_path"], "labels.npz"),
             "panoptic labels": panoptic_labels(info["occ_path"])}
    for cam in CAMERAS:
        cam_info = info["cams"].get(cam)
        if cam_info is None or any(key not in cam_info for key in CAM_KEYS):
            problems.add(f"sample {name}: camera {cam} missing or incomplete")
            return
        if np.asarray(cam_info["cam_intrinsic"]).shape != (3, 3) or len(cam_info["sensor2ego_rotation"]) != 4:
            problems.add(f"sample {name} {cam}: cam_intrinsic must be 3x3 and rotations (w, x, y, z)")
        files[cam] = cam_info["data_path"]
    local = {}
    for what, stored in files.items():
        path = stored_to_local(stored, files_root, prefix)
        if path is None or not path.is_file():
            problems.add(f"sample {name}: {what} file {stored} " + ("missing" if path else f"not under {prefix}"))
        else:
            local[what] = path
    for cam in CAMERAS:
        if cam in local:
            image = cv2.imread(str(local[cam]), cv2.IMREAD_COLOR)
            if image is None or (size and image.shape[1::-1] != size):
                problems.add(f"sample {name}: {local[cam]} does not decode to a {size} image")
    if "lidar" in local:
        raw = np.fromfile(local["lidar"], dtype=np.float32)
        if raw.size == 0 or raw.size % 5 or not np.isfinite(raw).all():
            problems.add(f"sample {name}: {local['lidar']} is not float32 rows of 5 (x, y, z, intensity, ring)")
    if "labels" in local:
        labels = np.load(local["labels"])
        for key in LABEL_KEYS:
            if key not in labels or labels[key].shape != GRID_SHAPE or labels[key].dtype != np.uint8:
                problems.add(f"sample {name}: labels.npz['{key}'] must be uint8 {GRID_SHAPE}")
        if "semantics" in labels and labels["semantics"].max() > FREE:
            problems.add(f"sample {name}: semantics holds classes above {FREE}")
        if "panoptic labels" in local and all(key in labels for key in LABEL_KEYS):
            check_panoptic(name, labels, np.load(local["panoptic labels"]), local["panoptic labels"], problems)
    boxes, labels_ = info["ann_infos"]
    if len(boxes) != len(labels_) or any(np.shape(b) != (9,) for b in boxes) or \
            any(not 0 <= label < len(DET_CLASSES) for label in labels_):
        problems.add(f"sample {name}: ann_infos must be (boxes of 9 values, labels in 0..{len(DET_CLASSES) - 1})")
    n = len(info["gt_boxes"])
    if info["gt_boxes"].shape != (n, 7) or any(len(info[k]) != n for k in
                                               ("gt_names", "gt_velocity", "num_lidar_pts", "valid_flag")):
        problems.add(f"sample {name}: gt_boxes/gt_names/gt_velocity/num_lidar_pts/valid_flag disagree in length")


class RawTables:
    """The tables as plain JSON, indexed as the devkit indexes them (get(), sample['data'], sample['anns'])."""

    def __init__(self, tables: dict[str, list[dict]]) -> None:
        self.index = {name: {record["token"]: record for record in records} for name, records in tables.items()}
        for sample in tables["sample"]:
            sample["data"], sample["anns"] = {}, []
        for record in tables["sample_data"]:
            if record["is_key_frame"]:
                calibration = self.get("calibrated_sensor", record["calibrated_sensor_token"])
                channel = self.get("sensor", calibration["sensor_token"])["channel"]
                self.get("sample", record["sample_token"])["data"][channel] = record["token"]
        for record in tables["sample_annotation"]:
            self.get("sample", record["sample_token"])["anns"].append(record["token"])

    def get(self, table: str, token: str) -> dict:
        return self.index[table][token]


def load_tables(files_root: Path, version: str, problems: Problems):
    """The devkit's NuScenes if nuscenes-devkit imports, else RawTables; None if they do not load (problems say why)."""
    table_root = files_root / version
    tables = {}
    for name in nuscenes_db.TABLES:
        try:
            records = json.loads((table_root / f"{name}.json").read_text())
        except (OSError, ValueError) as exc:
            problems.add(f"{table_root / name}.json: does not load ({exc})")
            continue
        if isinstance(records, list) and all(isinstance(r, dict) and "token" in r for r in records):
            tables[name] = records
        else:
            problems.add(f"{table_root / name}.json: expected a list of records with tokens")
    if len(tables) < len(nuscenes_db.TABLES):
        return None
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError:
        pass
    else:
        try:
            return NuScenes(version=version, dataroot=str(files_root), verbose=False)
        except Exception as exc:  # whatever the devkit trips over is the problem to report
            problems.add(f"the nuscenes-devkit does not load {table_root}: {type(exc).__name__}: {exc}")
            return None
    try:
        return RawTables(tables)
    except KeyError as exc:
        problems.add(f"{table_root}: a record names token {exc}, which its table lacks")
        return None


def official_scenes(version: str, split: str) -> set[str]:
    names = set(scene_names(version, split))
    try:
        from nuscenes.utils import splits
    except ImportError:
        return names
    return names & set(getattr(splits, DEVKIT_SPLIT[version][split]))  # what the installed devkit agrees with


def close(a, b) -> bool:
    return np.shape(a) == np.shape(b) and np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                                                      rtol=0, atol=1e-9)


def check_sample_tables(db, info: dict, files_root: Path, prefix: str, problems: Problems) -> None:
    """One info against its sample in the tables (KeyError: a token the tables lack)."""
    name = info["token"]
    sample = db.get("sample", name)
    scene = db.get("scene", sample["scene_token"])
    if (scene["token"], scene["name"]) != (info["scene_token"], info["scene_name"]):
        problems.add(f"sample {name}: the tables put it in scene {scene['name']}, the infos in {info['scene_name']}")
    for channel in nuscenes_db.CHANNELS:
        if channel not in sample["data"]:
            problems.add(f"sample {name}: no key-frame sample_data for {channel} in the tables")
            continue
        record = db.get("sample_data", sample["data"][channel])
        path = files_root / record["filename"]
        stored = info["lidar_path"] if channel == LIDAR else info["cams"][channel]["data_path"]
        if not path.is_file():
            problems.add(f"sample {name}: sample_data {channel} names {record['filename']}, which is missing")
        elif stored_to_local(stored, files_root, prefix) != path:
            problems.add(f"sample {name}: sample_data {channel} names {record['filename']}, the info {stored}")
        calibration = db.get("calibrated_sensor", record["calibrated_sensor_token"])
        pose = db.get("ego_pose", record["ego_pose_token"])
        if channel == LIDAR:
            expected = (info["lidar2ego_translation"], info["lidar2ego_rotation"])
        else:
            cam = info["cams"][channel]
            expected = (cam["sensor2ego_translation"], cam["sensor2ego_rotation"])
            if record["token"] != cam["sample_data_token"] or not close(calibration["camera_intrinsic"],
                                                                       cam["cam_intrinsic"]):
                problems.add(f"sample {name} {channel}: sample_data token or camera_intrinsic differ from the info's")
        if not (close(calibration["translation"], expected[0]) and close(calibration["rotation"], expected[1])):
            problems.add(f"sample {name} {channel}: calibrated_sensor differs from the info's sensor2ego")
        if not (close(pose["translation"], info["ego2global_translation"])
                and close(pose["rotation"], info["ego2global_rotation"])):
            problems.add(f"sample {name} {channel}: ego_pose differs from the info's ego2global")
    counts = [db.get("sample_annotation", token)["num_lidar_pts"] for token in sample["anns"]]
    if counts != [int(n) for n in info["num_lidar_pts"]]:
        problems.add(f"sample {name}: {len(counts)} annotations in the tables, {len(info['num_lidar_pts'])} boxes "
                     "in the info (or their num_lidar_pts differ)")


def check_tables(files_root: Path, prefix: str, version: str, splits: dict[str, list[dict]],
                 problems: Problems) -> None:
    db = load_tables(files_root, version, problems)
    if db is None:
        return
    for split, infos in splits.items():
        official = official_scenes(version, split)
        for info in infos:
            if len(problems) > MAX_PROBLEMS:
                return
            if info.get("scene_name") not in official:
                problems.add(f"sample {info.get('token')}: scene {info.get('scene_name')} is not in {version}'s "
                             f"official {split} split, so upstream's converter would not put it in {split}")
            try:
                check_sample_tables(db, info, files_root, prefix, problems)
            except KeyError as exc:
                problems.add(f"sample {info.get('token')}: the tables lack record {exc}")


def load_infos(path: Path, problems: Problems) -> tuple[list[dict], str | None]:
    """The infos and the version their metadata names."""
    try:
        data = pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        problems.add(f"{path}: does not load ({exc})")
        return [], None
    if not isinstance(data, dict) or "infos" not in data or "version" not in data.get("metadata", {}):
        problems.add(f"{path}: expected {{'infos': [...], 'metadata': {{'version': ...}}}}")
        return [], None
    return data["infos"], data["metadata"]["version"]


def validate(files_root: Path, prefix: str, size: tuple[int, int] | None = None, version: str | None = None) -> dict:
    """Check the data set whose infos name it `prefix` and whose files are under files_root; its nuScenes tables
    are `version`'s (default: the version the infos' metadata names).

    Raises KitError listing the problems; returns counts and each checked camera's agreement.
    """
    problems = Problems()
    loaded = {split: load_infos(files_root / info_file(split), problems) for split in ("train", "val")}
    splits = {split: infos for split, (infos, _) in loaded.items()}
    named = {v for _, v in loaded.values() if v is not None}
    if version is None and len(named) == 1:
        version = next(iter(named))
    elif version is not None and named - {version}:
        problems.add(f"the infos' metadata names version {', '.join(sorted(named))}, the tables are {version}'s")
    scenes = {split: {info.get("scene_token") for info in infos} for split, infos in splits.items()}
    if scenes["train"] & scenes["val"]:
        problems.add("train and val share scenes")
    geometry = {}
    for split, infos in splits.items():
        if not infos:
            problems.add(f"{info_file(split)}: no samples")
            continue
        stamps = [info.get("timestamp") for info in infos]
        if len(set(stamps)) != len(stamps):
            problems.add(f"{info_file(split)}: timestamps are not unique (the dataset sorts by them)")
        for info in infos:
            check_info(info, files_root, prefix, problems, size)
            if len(problems) > MAX_PROBLEMS:
                break
        if not problems:
            geometry[split] = check_geometry(infos, files_root, prefix, problems)
    # After the geometry, which runs only on an otherwise clean set: disagreeing tables do not hide it.
    if version not in VERSIONS:
        problems.add(f"nuScenes version {version}: expected one of {', '.join(VERSIONS)}")
    elif all(splits.values()):
        check_tables(files_root, prefix, version, splits, problems)
    if problems:
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        raise KitError(f"the data set at {files_root} failed validation:\n  "
                       + "\n  ".join(problems[:MAX_PROBLEMS]) + more)
    return {"samples": {split: len(infos) for split, infos in splits.items()}, "geometry": geometry}
