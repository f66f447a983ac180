"""The Occ3D-nuScenes conventions: classes, grid, cameras, info files (standard library only; the one place
the kit writes them: the generator, the results parser, the pictures and the data check read them here).

Class order is occ_metrics.py's `Metric_mIoU.class_names`; the grid is its point_cloud_range at
0.4 m. Detection classes and their order are create_data_bevdet.py's `classes` (ann_infos labels).
"""

from __future__ import annotations

import os

OCC_CLASSES = (
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade",
    "vegetation", "free",
)
OCC = {name: index for index, name in enumerate(OCC_CLASSES)}
FREE = OCC["free"]
# Metric_mIoU.count_miou prints and averages all classes but 'free', in this order.
SCORED_CLASSES = OCC_CLASSES[:FREE]

# Ego frame (x forward, y left, z up, origin on the ground), x, y in [-40, 40), z in [-1, 5.4):
# voxel (i, j, k) spans [LO + 0.4 * index, LO + 0.4 * (index + 1)) on each axis.
GRID_SHAPE = (200, 200, 16)
GRID_LO = (-40.0, -40.0, -1.0)
VOXEL = 0.4
# The ground surface (z = 0) lies in layer k = 2, which spans [-0.2, 0.2).
GROUND_LAYER = 2

# create_data_bevdet.py's `classes`: ann_infos labels index into this tuple.
DET_CLASSES = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
               "pedestrian", "traffic_cone")

# The panoptic labels (SparseOcc's gen_instance_info.py, read by --eval ray-iou): classes whose objects are each
# an instance, as ray_pq.py's Metric_RayPQ counts them; every other class is stuff (instance 0).
THING_CLASSES = ("car", "truck", "construction_vehicle", "bus", "trailer", "motorcycle", "bicycle", "pedestrian")
# <data root>/occ3d_panoptic/<scene>/<token>/labels.npz, beside <data root>/gts/<scene>/<token>/labels.npz
PANOPTIC_DIR = "occ3d_panoptic"

CAMERAS = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")
LIDAR = "LIDAR_TOP"

INFO_PREFIX = "bevdetv2-nuscenes"
NUSCENES_VERSION = "v1.0-trainval"
SAMPLE_INTERVAL_US = 500_000  # nuScenes key frames come at 2 Hz


def info_file(split: str) -> str:
    return f"{INFO_PREFIX}_infos_{split}.pkl"


def panoptic_labels(occ_path: str) -> str:
    """The panoptic labels.npz of the sample whose gts directory is occ_path, where the dataset's ray-iou
    evaluation reads it (nuscenes_dataset_occ.py's panoptic_labels_path): occ3d_panoptic/ beside gts/."""
    sample_dir = os.path.normpath(occ_path)
    scene_dir = os.path.dirname(sample_dir)
    data_root = os.path.dirname(os.path.dirname(scene_dir))
    return os.path.join(data_root, PANOPTIC_DIR, os.path.basename(scene_dir), os.path.basename(sample_dir),
                        "labels.npz")
