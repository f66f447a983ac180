"""`kit.py bench rays`: RayIoU's ray casting with the portable dvr op on the CPU, at the metric's real sizes.

Per sample, ray_metrics.py casts 14040 rays (39 pitches x 360 azimuths) from each of up to 8 LiDAR
origins through the 200x200x16 prediction and again through the ground truth: 2 x 8 x 14040 = 224,640
rays for RayIoU, as many again for RayPQ (main_raypq casts them anew). This times the port's own
per-sample step (ray_metrics.cast_one_sample: the casts, the stop labels, the free-ray filter) on
synthetic Occ3D-like scenes, in this process on one thread and in N worker processes of one thread each
(as --eval ray-iou runs it, FLASHOCC_RAY_WORKERS), and prints rays per second and what that implies for
the 6019 samples of the nuScenes val split. Worker start-up (each imports the plugin) is timed apart.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from ..errors import KitError
from . import common

RAYS_PER_ORIGIN = 14040
VAL_SAMPLES = 6019
GRID = (200, 200, 16)
FREE = 17
LIDAR_ORIGIN = (0.9858, 0.0, 1.8402)  # the ego's LiDAR, metres (ray_metrics.py's comment)


def semantic_scene(rng, shape: tuple[int, int, int] = GRID):
    """An (X, Y, Z) uint8 label grid that looks roughly like Occ3D-nuScenes: ground with holes, buildings
    and vegetation at the sides, cars and pedestrians on the road, sparse clutter; the rest free."""
    import numpy as np

    x_size, y_size, z_size = shape
    sem = np.full(shape, FREE, dtype=np.uint8)
    ground = rng.choice([11, 13, 14], size=(x_size, y_size), p=[0.6, 0.2, 0.2])
    holes = rng.random((x_size, y_size)) < 0.1
    sem[:, :, 0] = sem[:, :, 1] = np.where(holes, FREE, ground)
    sem[:, :, 2] = np.where(holes | (rng.random((x_size, y_size)) < 0.7), FREE, ground)

    def box(label: int, x: int, y: int, size: tuple[int, int, int]) -> None:
        sem[max(x, 0):min(x + size[0], x_size), max(y, 0):min(y + size[1], y_size), 2:min(2 + size[2], z_size)] = label

    for _ in range(40):  # buildings and vegetation away from the road
        y = int(rng.integers(0, 50)) if rng.integers(2) == 0 else int(rng.integers(150, 200))
        box(int(rng.choice([15, 16])), int(rng.integers(0, 200)), y,
            (int(rng.integers(5, 40)), int(rng.integers(5, 20)), int(rng.integers(3, z_size - 1))))
    sizes = {4: (11, 5, 4), 10: (25, 7, 8), 7: (2, 2, 5), 2: (4, 2, 3)}  # car, truck, pedestrian, bicycle
    for _ in range(30):
        label = int(rng.choice([4, 4, 4, 10, 7, 2]))
        box(label, int(rng.integers(0, 200)), int(rng.integers(70, 130)), sizes[label])
    clutter = rng.random(shape) < 0.002
    sem[clutter] = rng.integers(0, FREE, size=int(clutter.sum()))
    return sem


def prediction_of(rng, sem, noise: float = 0.05):
    """A 'prediction': the scene one voxel over in x, a fraction of labels replaced at random."""
    import numpy as np

    pred = np.roll(sem, 1, axis=0).copy()
    flip = rng.random(sem.shape) < noise
    pred[flip] = rng.integers(0, FREE + 1, size=int(flip.sum()))
    return pred


def lidar_origins(rng, count: int = 8):
    """(1, count, 3) float64 origins in the ego frame, as EgoPoseDataset gives them: the ego's LiDAR and
    the LiDAR of other frames along the road, inside |x|, |y| < 39 m."""
    import torch

    found = [LIDAR_ORIGIN] + [(float(rng.uniform(-38, 38)), float(rng.uniform(-3, 3)),
                               LIDAR_ORIGIN[2] + float(rng.normal(0, 0.3))) for _ in range(count - 1)]
    return torch.tensor(found, dtype=torch.float64)[None]


def make_samples(count: int, origins: int, seed: int = 0) -> list[tuple]:
    """cast_one_sample's inputs: (prediction, truth, origins, None, None) per sample."""
    import numpy as np

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sem = semantic_scene(rng)
        samples.append((prediction_of(rng, sem), sem, lidar_origins(rng, origins), None, None))
    return samples


def run(flashocc: Path, samples: int, origins: int, workers: list[int]) -> dict:
    common.load_flashocc(flashocc)
    os.environ["FLASHOCC_DVR"] = "portable"  # the op under test, even on a CUDA host
    import torch

    from projects.mmdet3d_plugin.core.evaluation import ray_metrics

    inputs = make_samples(samples, origins)
    rays_per_sample = 2 * origins * RAYS_PER_ORIGIN
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ray_metrics.cast_one_sample(inputs[0])  # first call: lidar rays, caster choice
        wall, cpu = time.perf_counter(), time.process_time()
        for sample in inputs:
            ray_metrics.cast_one_sample(sample)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        torch.set_num_threads(threads)
    rows.append({"processes": 0, "seconds_per_sample": wall / samples, "cpu_seconds_per_sample": cpu / samples,
                 "startup_seconds": 0.0})
    for count in workers:
        # spawn, as ray_metrics.cast_samples does; each worker is warmed on one sample before the clock starts
        start = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(count, initializer=ray_metrics._start_worker) as pool:
            pool.map(ray_metrics.cast_one_sample, inputs[:1] * count, chunksize=1)
            startup = time.perf_counter() - start
            wall = time.perf_counter()
            pool.map(ray_metrics.cast_one_sample, inputs, chunksize=1)
            wall = time.perf_counter() - wall
        rows.append({"processes": count, "seconds_per_sample": wall / samples, "cpu_seconds_per_sample": None,
                     "startup_seconds": startup})
    for row in rows:
        row["rays_per_second"] = rays_per_sample / row["seconds_per_sample"]
        row["val_rayiou_minutes"] = (VAL_SAMPLES * row["seconds_per_sample"] + row["startup_seconds"]) / 60
        row["val_rayiou_raypq_minutes"] = (2 * VAL_SAMPLES * row["seconds_per_sample"] + row["startup_seconds"]) / 60
    return {"benchmark": "rays", "samples": samples, "origins": origins, "rays_per_sample": rays_per_sample,
            "val_samples": VAL_SAMPLES, "results": rows, "machine": common.machine(), "versions": common.versions()}


def check_settings(samples: int, origins: int, workers: list[int]) -> None:
    if samples < 1 or not 1 <= origins <= 8:
        raise KitError("--samples must be at least 1 and --origins from 1 to 8 (the metric uses up to 8)")
    if any(w < 1 for w in workers):
        raise KitError("--workers: process counts must be at least 1 (in-process is always measured)")


def report(document: dict) -> str:
    rows = [[("in this process" if r["processes"] == 0 else f"{r['processes']} worker processes"),
             f"{r['seconds_per_sample']:.3f}",
             f"{r['rays_per_second'] / 1e6:.2f}",
             f"{r['startup_seconds']:.1f}",
             f"{r['val_rayiou_minutes']:.1f}",
             f"{r['val_rayiou_raypq_minutes']:.1f}"] for r in document["results"]]
    machine = document["machine"]
    head = (f"portable dvr, {document['samples']} synthetic samples x {document['rays_per_sample']} rays "
            f"({document['origins']} origins), one torch thread per process; {machine['cpu']}, "
            f"{machine['cores']} cores, load {machine['load_average_start'][0]:.1f}")
    table = common.format_rows(["casting", "s/sample", "Mrays/s", "start-up s",
                                f"val {document['val_samples']} RayIoU min", "+ RayPQ min"], rows)
    return f"{head}\n{table}"
