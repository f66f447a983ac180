"""`--eval ray-iou` on the synthetic Occ3D-nuScenes set, on the CPU, with answers known beforehand.

The dataset's own evaluate (nuscenes_dataset_occ.py): the ray origins it casts from are the LiDAR positions of
the scene's key frames, from the infos' poses; the ground truth scores RayIoU 1 as FlashOCC's arrays and also
RayPQ 1 as Panoptic-FlashOcc's dicts, and each sample's prediction is scored against that sample; a missing
occ3d_panoptic file is named. Then tools/test.py as the kit launches evaluation (torchrun, two CPU ranks) on a
smoke checkpoint that the kit's launcher trained, whose head is set to predict a flat road: the printed table
and the metrics JSON carry what evaluate gives for that prediction.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import free_port
from flashocc_kit.occ3d import FREE, GRID_SHAPE, GROUND_LAYER, OCC, OCC_CLASSES, info_file, panoptic_labels
from flashocc_kit.training.nodes import Nodes
from flashocc_kit.training.run import SMOKE_CONFIG
from test_cpu_runs import run_env

np = pytest.importorskip("numpy", reason="needs numpy: run the suite in the kit's environment")
pytest.importorskip("mmcv", reason="needs mmcv: run the suite in the kit's environment")

DRIVEABLE = OCC["driveable_surface"]
KEYS = ("RayIoU", "RayIoU@1", "RayIoU@2", "RayIoU@4")
PQ_KEYS = ("RayPQ", "RayPQ@1", "RayPQ@2", "RayPQ@4")
TRAIN_ITERS = 4  # the run the evaluation command is built for (perf mode)


@pytest.fixture(scope="module")
def synthetic_set(flashocc_root, tmp_path_factory) -> Path:
    """One train and one val scene of 4 key frames (2 s): the ray origins of a sample are all 4 frames'."""
    from flashocc_kit.synth.generate import generate
    from flashocc_kit.synth.options import SynthOptions

    root = tmp_path_factory.mktemp("ray-iou") / "nuscenes"
    generate(SynthOptions(width=352, height=198, train_scenes=1, val_scenes=1, samples_per_scene=4, seed=3,
                          workers=2), root, str(root), progress=False)
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def val_set(flashocc_root, synthetic_set, monkeypatch_module):
    """The smoke config's test dataset, on the synthetic set; rays cast in this process (4 samples)."""
    from mmcv import Config
    from mmdet3d.datasets import build_dataset

    monkeypatch_module.setenv("FLASHOCC_RAY_WORKERS", "0")
    cfg = Config.fromfile(str(flashocc_root / SMOKE_CONFIG))
    cfg.data.test.data_root = f"{synthetic_set}/"
    cfg.data.test.ann_file = f"{synthetic_set}/{info_file('val')}"
    dataset = build_dataset(cfg.data.test, dict(test_mode=True))
    assert len(dataset) == 4
    return dataset


def panoptic(info: dict) -> dict:
    """A sample's occ3d_panoptic labels, found as the generator writes them (beside its gts/)."""
    return dict(np.load(panoptic_labels(info["occ_path"])))


def evaluate(dataset, results) -> dict:
    return dataset.evaluate(results, metric="ray-iou")


def rotation(wxyz) -> np.ndarray:
    """The rotation matrix of a unit quaternion stored (w, x, y, z), written out (not pyquaternion's reading)."""
    w, x, y, z = wxyz
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def test_rays_start_at_the_lidar_positions_of_the_scenes_frames(val_set):
    """EgoPoseDataset reads token, scene_token, lidar2ego_* and ego2global_* (w, x, y, z) from the infos: the
    origins of a sample are the LiDAR of every frame of its scene (all within 39 m here), in the sample's ego
    frame -- on the synthetic set's flat ground, all at the LiDAR's height."""
    from projects.mmdet3d_plugin.datasets.ego_pose_dataset import EgoPoseDataset

    infos = val_set.data_infos
    assert len({info["scene_token"] for info in infos}) == 1
    lidar_in_global = [np.array(info["ego2global_translation"]) + rotation(info["ego2global_rotation"])
                       @ np.array(info["lidar2ego_translation"]) for info in infos]
    poses = EgoPoseDataset(infos)
    for i, info in enumerate(infos):
        token, origins = poses[i]
        assert token == info["token"] and origins.shape == (len(infos), 3)
        to_ego = rotation(info["ego2global_rotation"]).T
        expected = [to_ego @ (g - np.array(info["ego2global_translation"])) for g in lidar_in_global]
        np.testing.assert_allclose(origins.numpy(), np.array(expected), rtol=0, atol=1e-4)
        np.testing.assert_allclose(origins[i].numpy(), info["lidar2ego_translation"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(origins[:, 2].numpy(), info["lidar2ego_translation"][2], rtol=0, atol=1e-4)
    moved = np.linalg.norm(lidar_in_global[-1] - lidar_in_global[0])
    assert moved > 1.0, "the ego should move in this scene, or the origins test nothing"


def test_ground_truth_as_flashocc_arrays_scores_one(val_set):
    truth = [panoptic(info)["semantics"] for info in val_set.data_infos]
    assert evaluate(val_set, truth) == dict.fromkeys(KEYS, 1.0)
    # each prediction is scored against its own sample: the neighbour's truth scores less
    shifted = evaluate(val_set, truth[1:] + truth[:1])
    assert 0 < shifted["RayIoU"] < 1


def test_ground_truth_as_panoptic_dicts_scores_one_with_raypq(val_set):
    import torch

    labels = [panoptic(info) for info in val_set.data_infos]
    results = [{"pred_occ": torch.from_numpy(lab["semantics"]), "pano_inst": torch.from_numpy(lab["instances"])[None]}
               for lab in labels]
    assert results[0]["pano_inst"].shape == (1, 200, 200, 16)
    assert evaluate(val_set, results) == dict.fromkeys(KEYS + PQ_KEYS, 1.0)
    # the instances count: two objects of one class predicted as one leave RayIoU at 1 but not RayPQ
    merged = 0
    for result, lab in zip(results, labels):
        instances, semantics = lab["instances"], lab["semantics"]
        ids, sizes = np.unique(instances[instances > 0], return_counts=True)
        classes = np.array([semantics[instances == n][0] for n in ids])
        cls = np.bincount(classes).argmax()  # the most frequent thing class, with its two largest objects
        if (classes == cls).sum() < 2:
            continue
        a, b = ids[classes == cls][np.argsort(sizes[classes == cls])[-2:]]
        pano = instances.copy()
        pano[pano == b] = a
        result["pano_inst"] = torch.from_numpy(pano)[None]
        merged += 1
    assert merged >= 2
    scores = evaluate(val_set, results)
    assert {k: scores[k] for k in KEYS} == dict.fromkeys(KEYS, 1.0)
    assert all(0 < scores[k] < 1 for k in PQ_KEYS), scores


def test_missing_panoptic_labels_are_named(val_set, tmp_path):
    elsewhere = copy.copy(val_set)
    elsewhere.data_infos = copy.deepcopy(val_set.data_infos)
    info = elsewhere.data_infos[2]
    sample = Path(info["occ_path"])
    gts = tmp_path / "nuscenes" / "gts" / sample.parent.name / sample.name  # a data root with gts/ alone
    shutil.copytree(sample, gts)
    info["occ_path"] = str(gts)
    missing = panoptic_labels(str(gts))
    truth = [panoptic(i)["semantics"] for i in val_set.data_infos]
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        evaluate(elsewhere, truth)


def flat_road_checkpoint(flashocc_root: Path, out: Path) -> None:
    """The smoke model's checkpoint (mmcv's save_checkpoint, as training writes it) with its occupancy head's last
    layer set to a constant: driveable surface in the ground layer, free above and below, whatever the images show
    (so the other weights, trained or not, change nothing)."""
    import torch
    from mmcv.runner import save_checkpoint

    from test_configs_build import build

    torch.manual_seed(0)
    model = build(flashocc_root, str(Path(SMOKE_CONFIG).relative_to("projects/configs")))
    model.init_weights()
    state = model.state_dict()
    weight, bias = state["occ_head.predicter.2.weight"], state["occ_head.predicter.2.bias"]
    logits = torch.zeros(GRID_SHAPE[2], len(OCC_CLASSES))  # (Dz, classes), as the head views its output
    logits[:, FREE] = 10.0
    logits[GROUND_LAYER, DRIVEABLE] = 20.0
    with torch.no_grad():
        weight.zero_()
        bias.copy_(logits.reshape(-1))
    save_checkpoint(model, str(out))


def test_tools_test_py_evaluates_ray_iou_on_the_cpu(flashocc_root, synthetic_set, val_set, tmp_path, monkeypatch):
    from flashocc_kit.training.commands import rank_environment, test_command
    from flashocc_kit.training.run import LaunchRequest, build_run

    work, output = tmp_path / "work", tmp_path / "output"
    work.mkdir()
    # the smoke model's checkpoint, its head made to predict a flat road
    checkpoint = tmp_path / "flat-road.pth"
    flat_road_checkpoint(flashocc_root, checkpoint)

    # the evaluation command the launcher runs after a smoke training (two CPU ranks), asking for ray-iou
    # the command names the port torchrun listens on
    cluster = Nodes(count=1, rank=0, master_addr="127.0.0.1", master_port=free_port())
    run = build_run(LaunchRequest(mode="perf", smoke=True, max_iters=TRAIN_ITERS, data_root=str(synthetic_set),
                                  work_dir=str(work), output_dir=str(output)), flashocc_root, cluster)
    results = work / "results.pkl"
    command = test_command(run, checkpoint, results)
    command[command.index("--eval") + 1] = "ray-iou"
    env = {**run_env(), **rank_environment(run)}
    env.pop("FLASHOCC_RAY_WORKERS", None)  # as users run it: the rays cast in spawned worker processes
    proc = subprocess.run(command, cwd=flashocc_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"\|\s+Class Names\s+\|\s+RayIoU@1\s+\|\s+RayIoU@2\s+\|\s+RayIoU@4\s+\|", proc.stdout), \
        proc.stdout[-3000:]
    assert re.search(r"\|\s+driveable_surface\s+\|\s+0\.\d{3}\s+\|", proc.stdout)
    assert re.search(r"\|\s+MEAN\s+\|\s+0\.\d{3}\s+\|", proc.stdout)
    assert "ray casting: the portable PyTorch op" in proc.stdout + proc.stderr

    document = json.loads(results.with_suffix(".metrics.json").read_text())
    assert (document["schema"], document["metric"]) == (1, "ray-iou")
    values = document["values"]
    assert set(values) == set(KEYS) and all(0 < values[k] < 1 for k in KEYS), values
    # what the dataset's evaluate gives for that prediction, here in this process
    road = np.full(GRID_SHAPE, FREE, dtype=np.uint8)
    road[:, :, GROUND_LAYER] = DRIVEABLE
    expected = evaluate(val_set, [road] * len(val_set))
    assert values == pytest.approx({k: float(v) for k, v in expected.items()}, rel=0, abs=1e-12)
