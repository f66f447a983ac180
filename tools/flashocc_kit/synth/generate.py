"""The generator: scenes -> key frames -> files, infos and nuScenes tables in a staging directory -> validated
-> in place."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..hostinfo import usable_cpus
from ..occ3d import CAMERAS, INFO_PREFIX, LIDAR, SAMPLE_INTERVAL_US, info_file
from . import nuscenes_db, target
from .cameras import Camera, Lidar, make_rig
from .geometry import yaw_matrix
from .options import SynthOptions
from .raycast import OccupancyGrid
from .render import Look, render_camera, scan_lidar
from .scene import World, build_world, voxelise
from .splits import scene_names
from .visibility import camera_mask, lidar_mask
from .writer import Pose, SampleNames, encode_jpeg, npz_bytes, points_in_boxes, sample_info, token, write_bytes

FORMAT_VERSION = 3  # 2: official scene names, nuScenes tables; 3: occ3d_panoptic/ (instances)
FIRST_TIMESTAMP = 1_533_000_000_000_000  # microseconds, mid-2018 like nuScenes' logs
SCENE_SPACING_US = 3_600_000_000  # one hour between scenes: sorted by timestamp, scenes stay contiguous


@dataclass(frozen=True)
class Job:
    """What every sample's worker needs to know."""

    opts: SynthOptions
    staging: str  # where files are written now
    prefix: str  # how the infos name the data root


@dataclass(frozen=True)
class Scene:
    index: int
    name: str
    token: str
    world: World
    cameras: list[Camera]
    lidar: Lidar
    look: Look
    origin: tuple[float, float, float]  # scene frame in the global frame: x, y, yaw


def scene_name(opts: SynthOptions, index: int) -> str:
    """Train scenes take the official train split's names in order, val scenes the val split's: upstream's
    converter sorts scenes into train and val by name (the 'scene-' prefix is what evaluation looks for)."""
    if index < opts.train_scenes:
        return scene_names(opts.version, "train")[index]
    return scene_names(opts.version, "val")[index - opts.train_scenes]


def log_name(opts: SynthOptions, name: str) -> str:
    """The scene's log, also the stem of its files' names (nuScenes: <log>__<channel>__<timestamp>)."""
    return f"synth{opts.seed}-{name}"


def scene_streams(opts: SynthOptions, index: int) -> list[np.random.Generator]:
    """The scene's random streams: world, rig, look."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([opts.seed, index]).spawn(3)]


def scene_rig(opts: SynthOptions, index: int) -> tuple[list[Camera], Lidar]:
    return make_rig(opts.width, opts.height, scene_streams(opts, index)[1])


@functools.lru_cache(maxsize=2)
def make_scene(opts: SynthOptions, index: int) -> Scene:
    world_rng, _, look_rng = scene_streams(opts, index)
    world = build_world(world_rng, opts.samples_per_scene)
    cameras, lidar = scene_rig(opts, index)
    look = Look.sample(look_rng)
    # Global placement like nuScenes' maps: hundreds to thousands of metres, any heading.
    origin = (float(look_rng.uniform(300, 2500)), float(look_rng.uniform(600, 2200)),
              float(look_rng.uniform(-np.pi, np.pi)))
    return Scene(index, scene_name(opts, index), scene_token(opts, index), world, cameras, lidar, look, origin)


def scene_token(opts: SynthOptions, index: int) -> str:
    return token(opts.seed, "scene", index)


def render_sample(job: Job, scene_index: int, k: int) -> bytes:
    """Render and write one key frame; returns its info and what the nuScenes tables need of it, pickled
    (so in-process and worker runs match)."""
    opts = job.opts
    scene = make_scene(opts, scene_index)
    frame = voxelise(scene.world, k)
    grid = OccupancyGrid(frame.semantics)
    rng = np.random.default_rng([opts.seed, scene_index, k, 1])
    timestamp = FIRST_TIMESTAMP + scene_index * SCENE_SPACING_US + k * SAMPLE_INTERVAL_US
    names = SampleNames(scene.name, token(opts.seed, "sample", scene_index, k), timestamp,
                        log_name(opts, scene.name))
    root = Path(job.staging)

    hits = []
    for camera in scene.cameras:
        image, camera_hits = render_camera(grid, camera, scene.look, rng, salt=scene_index)
        write_bytes(root, names.camera(camera.name), encode_jpeg(image))
        hits.append(camera_hits)
    sweep = scan_lidar(grid, scene.lidar, rng)
    write_bytes(root, names.lidar(), sweep.points.tobytes())
    labels = {"semantics": frame.semantics, "mask_lidar": lidar_mask(frame.semantics, scene.lidar, sweep),
              "mask_camera": camera_mask(frame.semantics, scene.cameras, hits)}
    write_bytes(root, os.path.join(names.occ_dir(), "labels.npz"), npz_bytes(labels))
    # SparseOcc's gen_instance_info.py output: the same labels plus each voxel's object, for RayPQ
    write_bytes(root, os.path.join(names.panoptic_dir(), "labels.npz"),
                npz_bytes({**labels, "instances": frame.voxel_instances}))

    ox, oy, oyaw = scene.origin
    ex, ey, eyaw = frame.pose
    global_xy = np.array([ox, oy]) + yaw_matrix(oyaw)[:2, :2] @ np.array([ex, ey])
    pose = Pose(np.array([global_xy[0], global_xy[1], 0.0]), float(oyaw + eyaw))
    num_lidar_pts = points_in_boxes(sweep.points_ego, frame.boxes)
    info = sample_info(job.prefix, names, scene.token, pose, scene.cameras, scene.lidar, frame.boxes, frame.labels,
                       num_lidar_pts)
    files = {LIDAR: names.lidar(), **{camera.name: names.camera(camera.name) for camera in scene.cameras}}
    key_frame = nuscenes_db.KeyFrame(scene_index, names.sample_token, timestamp, pose, files, frame.boxes,
                                     frame.labels, frame.instances, num_lidar_pts)
    return pickle.dumps((info, key_frame), protocol=4)


def _render_task(args: tuple[Job, int, int]) -> bytes:
    return render_sample(*args)


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """BLAS on one thread: the matrices here are (N, 3) x (3, 3), where OpenBLAS's threads only spin,
    and the workers are the parallelism."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _init_worker() -> None:
    single_threaded_blas()  # kept for the worker's lifetime


def default_workers() -> int:
    cpus = usable_cpus()
    return max(1, min(8, cpus))


def write_set(job: Job, progress: bool = True) -> dict[str, list[dict]]:
    """Render every sample into job.staging, write the two info files and the nuScenes tables; returns the
    infos by split."""
    opts = job.opts
    tasks = [(job, s, k) for s in range(opts.train_scenes + opts.val_scenes) for k in range(opts.samples_per_scene)]
    results = []
    if opts.workers > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        # The pool first: forking before tqdm starts its monitor thread.
        with multiprocessing.get_context(method).Pool(min(opts.workers, len(tasks)), _init_worker) as pool, \
                tqdm(total=len(tasks), unit="sample", desc="synth", disable=not progress) as bar:
            for result in pool.imap(_render_task, tasks):
                results.append(result)
                bar.update()
    else:
        with tqdm(total=len(tasks), unit="sample", desc="synth", disable=not progress) as bar:
            for task in tasks:
                results.append(_render_task(task))
                bar.update()
    infos, key_frames = zip(*(pickle.loads(blob) for blob in results))
    split = {"train": [], "val": []}
    for (_, scene_index, _), info in zip(tasks, infos):
        split["train" if scene_index < opts.train_scenes else "val"].append(info)
    for name, split_infos in split.items():
        # The version as upstream's converter records it (v1.0-trainval unless --version v1.0-mini).
        data = {"infos": split_infos, "metadata": {"version": opts.version}}
        (Path(job.staging) / info_file(name)).write_bytes(pickle.dumps(data, protocol=4))
    nuscenes_db.write_database(Path(job.staging), opts.version, opts.seed, (opts.width, opts.height),
                               scene_entries(opts), list(key_frames))
    return split


def scene_entries(opts: SynthOptions) -> list[nuscenes_db.SceneEntry]:
    entries = []
    for index in range(opts.train_scenes + opts.val_scenes):
        name = scene_name(opts, index)
        cameras, lidar = scene_rig(opts, index)
        entries.append(nuscenes_db.SceneEntry(index, name, scene_token(opts, index), log_name(opts, name), cameras,
                                              lidar))
    return entries


def marker_content(opts: SynthOptions, prefix: str) -> dict:
    return {"generator": "flashocc-kit synth", "format_version": FORMAT_VERSION, "seed": opts.seed,
            "parameters": opts.parameters(), "infos": [info_file("train"), info_file("val")],
            "info_prefix": INFO_PREFIX, "paths_start_with": prefix, "cameras": list(CAMERAS),
            "nuscenes_version": opts.version}


def generate(opts: SynthOptions, out_dir: Path, prefix: str, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Write a complete synthetic data set to out_dir (infos name it `prefix`); returns a summary."""
    from .validate import validate

    opts.check()
    out_dir = out_dir.resolve() if out_dir.exists() else out_dir.absolute()
    target.check_target(out_dir, overwrite)
    started = time.monotonic()
    staging = target.stage(out_dir)
    try:
        with single_threaded_blas():
            split = write_set(Job(opts, str(staging), prefix), progress)
            target.write_marker(staging, marker_content(opts, prefix))
            report = validate(staging, prefix, (opts.width, opts.height), opts.version)
        target.commit(staging, out_dir, overwrite)
    except BaseException:
        target.discard(staging)
        raise
    return {"out": out_dir, "train": len(split["train"]), "val": len(split["val"]),
            "seconds": time.monotonic() - started, "validation": report}
