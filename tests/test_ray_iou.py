"""Upstream's RayIoU and RayPQ code (core/evaluation/ray_metrics.py, ray_pq.py) through the portable ray caster,
with answers known beforehand: the truth against itself scores 1 everywhere, and a ground slab predicted one
voxel too high scores what the geometry of the slab gives, computed here without the traversal."""

from __future__ import annotations

import numpy as np
import pytest

from flashocc_kit.bench import rays as ray_scenes

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)
torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")

FREE = 17
DRIVEABLE = 11
LIDAR = (0.9858, 0.0, 1.8402)  # the ego's LiDAR in the ego frame, metres
THRESHOLDS = (1, 2, 4)


@pytest.fixture(scope="module")
def ray_metrics(flashocc_root, monkeypatch_module):
    monkeypatch_module.setenv("FLASHOCC_DVR", "portable")
    monkeypatch_module.setenv("FLASHOCC_RAY_WORKERS", "0")
    from projects.mmdet3d_plugin.core.evaluation import ray_metrics

    return ray_metrics


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def origins(*points: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(points, dtype=torch.float64)[None]


def slab(z: int) -> np.ndarray:
    sem = np.full(ray_scenes.GRID, FREE, dtype=np.uint8)
    sem[:, :, z] = DRIVEABLE
    return sem


def test_the_truth_against_itself_scores_one_at_every_threshold(ray_metrics):
    rng = np.random.default_rng(0)
    scenes = [ray_scenes.semantic_scene(rng) for _ in range(2)]
    poses = [ray_scenes.lidar_origins(rng, 3) for _ in scenes]
    result = ray_metrics.main(scenes, scenes, poses)
    assert result == {"RayIoU": 1.0, "RayIoU@1": 1.0, "RayIoU@2": 1.0, "RayIoU@4": 1.0}


def test_panoptic_truth_against_itself_scores_one(ray_metrics):
    rng = np.random.default_rng(1)
    sem = ray_scenes.semantic_scene(rng)
    instances = np.zeros(sem.shape, dtype=np.int64)
    cars = np.argwhere(sem == 4)
    # each car voxel run along x is one instance: every instance one class, as Occ3D's panoptic labels
    for number, x in enumerate(np.unique(cars[:, 0] // 11), start=1):
        part = cars[cars[:, 0] // 11 == x]
        instances[part[:, 0], part[:, 1], part[:, 2]] = number
    poses = [ray_scenes.lidar_origins(rng, 2)]
    result = ray_metrics.main_raypq([sem], [sem], [instances], [instances], poses)
    assert result == {"RayPQ": 1.0, "RayPQ@1": 1.0, "RayPQ@2": 1.0, "RayPQ@4": 1.0}


def first_slab_voxel_exit(origin: np.ndarray, end: np.ndarray, top: float) -> np.ndarray:
    """Where each ray leaves the first voxel of a one-voxel slab [top - 1, top) it enters from above, in
    voxel units: the ray meets the plane z = top at a point of a voxel (x, y, top - 1) and leaves that box
    through its nearest exit face. Plain geometry, not the traversal; NaN for rays that do not come down
    onto the slab inside the grid."""
    r = end - origin
    d = r / np.sqrt((r * r).sum(1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_in = (top - origin[0, 2]) / d[:, 2]
        hit = origin + t_in[:, None] * d
        inside = (d[:, 2] < 0) & (hit[:, 0] >= 0) & (hit[:, 0] < 200) & (hit[:, 1] >= 0) & (hit[:, 1] < 200)
        low = np.floor(hit[:, :2])
        exits = []
        for axis in (0, 1):
            face = np.where(d[:, axis] > 0, low[:, axis] + 1, low[:, axis])
            exits.append(np.where(d[:, axis] != 0, (face - origin[0, axis]) / d[:, axis], np.inf))
        exits.append((top - 1 - origin[0, 2]) / d[:, 2])
    return np.where(inside, np.minimum.reduce(exits), np.nan)


def test_a_slab_predicted_one_voxel_too_high_scores_its_geometry(ray_metrics):
    # the truth: driveable ground in z = 0 everywhere; the prediction: the same slab in z = 1
    truth, prediction = slab(0), slab(1)
    pose = origins(LIDAR)
    result = ray_metrics.main([prediction], [truth], [pose])

    # the caster's inputs, computed as process_one_sample computes them
    offset, scaler = torch.Tensor([-40, -40, -1.0])[None, None], torch.Tensor([0.4] * 3)[None, None]
    rays = torch.from_numpy(ray_metrics.generate_lidar_rays())
    origin = ((pose - offset) / scaler).float()[0].double().numpy()
    end = (((rays[None] + pose) - offset) / scaler).float()[0].double().numpy()
    truth_exit = first_slab_voxel_exit(origin, end, top=1)
    predicted_exit = first_slab_voxel_exit(origin, end, top=2)
    counted = ~np.isnan(truth_exit)  # rays whose truth is not free: they come down onto the slab
    assert counted.sum() > 3000 and not np.isnan(predicted_exit[counted]).any()
    l1 = np.abs(np.float32(predicted_exit[counted] * 0.4) - np.float32(truth_exit[counted] * 0.4))
    assert (np.abs(l1[:, None] - np.array(THRESHOLDS)) > 1e-4).all()  # no ray on a threshold: rounding cannot flip
    rays_counted = int(counted.sum())
    expected = {}
    for threshold in THRESHOLDS:
        hits = int((l1 < threshold).sum())  # label right everywhere; distance within the threshold
        expected[f"RayIoU@{threshold}"] = hits / (2 * rays_counted - hits)
    assert 0 < expected["RayIoU@1"] < expected["RayIoU@2"] < expected["RayIoU@4"] < 1
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert result["RayIoU"] == pytest.approx(sum(expected.values()) / 3, abs=1e-12)


def test_worker_processes_give_the_results_of_one_process(ray_metrics, monkeypatch):
    rng = np.random.default_rng(2)
    truths = [ray_scenes.semantic_scene(rng) for _ in range(3)]
    predictions = [ray_scenes.prediction_of(rng, sem) for sem in truths]
    poses = [ray_scenes.lidar_origins(rng, 2) for _ in truths]
    alone = ray_metrics.main(predictions, truths, poses)
    monkeypatch.setenv("FLASHOCC_RAY_WORKERS", "2")
    together = ray_metrics.main(predictions, truths, poses)
    assert together == alone and 0 < alone["RayIoU"] < 1


def test_a_bad_worker_count_is_refused_by_name(ray_metrics, monkeypatch):
    monkeypatch.setenv("FLASHOCC_RAY_WORKERS", "two")
    with pytest.raises(ValueError, match="FLASHOCC_RAY_WORKERS='two'"):
        ray_metrics.ray_workers(ray_metrics.ray_caster())
