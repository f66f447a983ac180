# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""What is wrong with one sample of a FlashOCC info file, named by field or by file.

The dataset uses it to turn a failure deep inside a data-loader worker into
one sentence that names the sample and the file; the porting kit's
`kit.py check-data` runs it over whole info files before a long run.
"""
import os
import zipfile

import numpy as np

# What tools/create_data_bevdet.py writes and the occupancy datasets read.
INFO_KEYS = ('token', 'cams', 'lidar_path', 'timestamp', 'lidar2ego_translation',
             'lidar2ego_rotation', 'ego2global_translation', 'ego2global_rotation',
             'occ_path', 'scene_name', 'ann_infos')
CAMERA_KEYS = ('data_path', 'cam_intrinsic', 'sensor2ego_translation',
               'sensor2ego_rotation', 'ego2global_translation', 'ego2global_rotation',
               'sensor2lidar_rotation', 'sensor2lidar_translation')
POSE_KEYS = ('lidar2ego_translation', 'lidar2ego_rotation', 'ego2global_translation',
             'ego2global_rotation')
OCC_ARRAYS = ('semantics', 'mask_lidar', 'mask_camera')
LIDAR_VALUES = 5  # x, y, z, intensity, ring: float32 each (nuScenes' .pcd.bin)


def missing_keys(info):
    """The keys create_data_bevdet.py writes that this info lacks."""
    missing = [key for key in INFO_KEYS if key not in info]
    for name, cam in (info.get('cams') or {}).items():
        missing += [f'cams.{name}.{key}' for key in CAMERA_KEYS if key not in cam]
    return missing


def _not_finite(value):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return True
    return not np.all(np.isfinite(array))


def pose_problems(info):
    """Poses and intrinsics that are not all finite numbers."""
    problems = [f'{key} is not finite: {info[key]}' for key in POSE_KEYS
                if key in info and _not_finite(info[key])]
    for name, cam in (info.get('cams') or {}).items():
        problems += [f'cams.{name}.{key} is not finite' for key in CAMERA_KEYS[1:]
                     if key in cam and _not_finite(cam[key])]
    return problems


def image_problem(path):
    """Why an image file cannot be used, or None (decoded in full: a truncated JPEG fails here)."""
    from PIL import Image

    if not os.path.isfile(path):
        return 'missing'
    try:
        with Image.open(path) as img:
            img.load()
            size = img.size
    except (OSError, SyntaxError, ValueError) as exc:
        return f'does not decode: {exc}'
    return None if size[0] > 0 and size[1] > 0 else 'empty image'


def lidar_problem(path):
    if not os.path.isfile(path):
        return 'missing'
    size = os.path.getsize(path)
    if size == 0 or size % (4 * LIDAR_VALUES):
        return (f'{size} bytes: not a whole number of {LIDAR_VALUES}-float32 points '
                '(cut off?)')
    return None


def occupancy_problem(directory, grid_shape, num_classes):
    path = os.path.join(directory, 'labels.npz')
    if not os.path.isfile(path):
        return path, 'missing (Occ3D-nuScenes labels: gts/<scene>/<token>/labels.npz)'
    try:
        with np.load(path) as labels:
            arrays = {key: labels[key] for key in OCC_ARRAYS if key in labels}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a cut-off .npz is a bad zip
        return path, f'does not load: {exc}'
    absent = [key for key in OCC_ARRAYS if key not in arrays]
    if absent:
        return path, f'has no {", ".join(absent)}'
    shapes = {key: tuple(array.shape) for key, array in arrays.items()}
    if any(shape != tuple(grid_shape) for shape in shapes.values()):
        return path, f'arrays of shapes {shapes}, expected {tuple(grid_shape)}'
    semantics = arrays['semantics']
    if semantics.min() < 0 or semantics.max() >= num_classes:
        return path, (f'semantics range {semantics.min()}..{semantics.max()}, '
                      f'expected 0..{num_classes - 1}')
    return None


def check_sample(info, cameras=None, grid_shape=(200, 200, 16), num_classes=18, files=True):
    """Every problem of one sample, each naming its field or file (empty when it is sound)."""
    problems = [f'no {key} (not made by tools/create_data_bevdet.py?)' for key in missing_keys(info)]
    problems += pose_problems(info)
    cams = info.get('cams') or {}
    if cameras is not None and set(cams) != set(cameras):
        problems.append(f'cameras {sorted(cams)}, the config expects {sorted(cameras)}')
    if not files:
        return problems
    for name, cam in cams.items():
        if 'data_path' in cam:
            why = image_problem(cam['data_path'])
            if why:
                problems.append(f'{cam["data_path"]} ({name}): {why}')
    if 'lidar_path' in info:
        why = lidar_problem(info['lidar_path'])
        if why:
            problems.append(f'{info["lidar_path"]}: {why}')
    if 'occ_path' in info:
        found = occupancy_problem(info['occ_path'], grid_shape, num_classes)
        if found:
            problems.append(f'{found[0]}: {found[1]}')
    return problems


def describe_failure(info, index, exc):
    """One sentence for a sample that failed in the pipeline: its token and what is wrong with which file."""
    token = info.get('token', '?') if isinstance(info, dict) else '?'
    problems = check_sample(info) if isinstance(info, dict) else []
    what = '; '.join(problems) if problems else f'{type(exc).__name__}: {exc}'
    return f'sample {token} (index {index}): {what}'


def finite_or_raise(info, index):
    problems = pose_problems(info)
    if problems:
        raise ValueError(f'sample {info.get("token", "?")} (index {index}): {"; ".join(problems)}')
