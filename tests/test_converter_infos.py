"""The user's data path end to end: the patched tools/create_data_bevdet.py, run as a user runs it (from the
FlashOCC root, with --root-path, --version and --extra-tag), makes from a generated set's nuScenes tables the
infos the generator writes itself, field by field; occ_path follows the root given; the smoke configuration
trains on those infos; and the converter shortens paths only under the working directory's path components."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flashocc_kit.synth.options import SynthOptions
from test_nuscenes_db import compare_adj_info, compare_converted, load_infos, make, seen_more_than_once

devkit = pytest.importorskip("nuscenes.nuscenes", reason="needs the nuscenes-devkit: run with the kit's environment")

OPTS = SynthOptions(width=192, height=108, train_scenes=1, val_scenes=1, samples_per_scene=3, seed=21, workers=1)
TAG = "converted"
SMOKE_CONFIG = "projects/configs/flashocc/flashocc-r50-smoke.py"
MAX_ITERS = 4  # batch 1 on 3 training samples: past the end of the first epoch


@pytest.fixture(scope="module")
def dirs(flashocc_root, tmp_path_factory) -> dict[str, Path]:
    """The set at BASE/data2/<BASE/data, less its leading />/nuscenes, and the generator's own infos moved out of
    it to BASE/generated (training can then read only the converter's). Run in BASE/data, the data root's path
    starts with the working directory's as a string, not as a path, and holds it further in: upstream's
    `os.getcwd() in path` matched there and cut the camera paths to nuscenes/samples/..."""
    base = tmp_path_factory.mktemp("converter").resolve()
    cwd = base / "data"
    cwd.mkdir()
    root = make(base / "data2" / str(cwd).lstrip(os.sep), OPTS)
    generated = base / "generated"
    generated.mkdir()
    for split in ("train", "val"):
        shutil.move(root / f"bevdetv2-nuscenes_infos_{split}.pkl", generated)
    return {"root": root, "generated": generated, "string_prefix_cwd": cwd}


def create_data(cwd: Path, flashocc_root: Path, root_arg: str, tag: str) -> None:
    """python FlashOCC/tools/create_data_bevdet.py --root-path ROOT --version ... --extra-tag TAG, in cwd."""
    proc = subprocess.run([sys.executable, str(flashocc_root / "tools" / "create_data_bevdet.py"), "--root-path",
                           root_arg, "--version", OPTS.version, "--extra-tag", tag], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def converted(dirs, flashocc_root) -> Path:
    create_data(flashocc_root, flashocc_root, str(dirs["root"]), TAG)
    return dirs["root"]


@pytest.fixture(scope="module")
def nusc(dirs):
    return devkit.NuScenes(OPTS.version, str(dirs["root"]), verbose=False)


def test_the_converters_infos_are_the_generators_field_by_field(dirs, converted, nusc):
    for split in ("train", "val"):
        ours, theirs = load_infos(dirs["generated"], split), load_infos(converted, split, TAG)
        assert theirs["metadata"] == ours["metadata"] == {"version": OPTS.version}
        assert [i["token"] for i in theirs["infos"]] == [i["token"] for i in ours["infos"]]
        assert len(ours["infos"]) == OPTS.samples_per_scene
        for generated, info in zip(ours["infos"], theirs["infos"]):
            # every field is compared: compare_converted's (create_nuscenes_infos) and compare_adj_info's
            # (add_ann_adj_info), with the allowed differences those helpers name
            assert sorted(info) == sorted(generated)
            for cam in generated["cams"]:
                assert sorted(info["cams"][cam]) == sorted(generated["cams"][cam])
            multi = seen_more_than_once(nusc, generated["token"])
            compare_converted(generated, info, multi)
            compare_adj_info(generated, info, multi)


def test_occ_path_lies_under_the_root_given(converted):
    """ROOT/gts/<scene>/<token>, as the generator and the dataset have it (labels.npz in it; the ray-iou
    ground truth is looked up beside gts/, three levels up)."""
    for split in ("train", "val"):
        for info in load_infos(converted, split, TAG)["infos"]:
            assert info["occ_path"] == f"{converted}/gts/{info['scene_name']}/{info['token']}"
            assert Path(info["occ_path"]).parents[2] == converted
            assert (Path(info["occ_path"]) / "labels.npz").is_file()


def stored_and_files(info: dict, nusc) -> list[tuple[str, str]]:
    """(path in the info, the table's filename) for its LiDAR sweep and each camera image."""
    lidar = nusc.get("sample", info["token"])["data"]["LIDAR_TOP"]
    return [(info["lidar_path"], nusc.get("sample_data", lidar)["filename"])] + [
        (cam["data_path"], nusc.get("sample_data", cam["sample_data_token"])["filename"])
        for cam in info["cams"].values()]


@pytest.mark.parametrize("case", ["string-prefix-cwd", "parent-cwd", "relative-root"])
def test_paths_are_shortened_only_under_the_working_directory(case, dirs, flashocc_root, nusc):
    """string-prefix-cwd: the fix; camera paths stay absolute (as lidar_path), where upstream's substring test
    cut them. parent-cwd: an absolute root under the working directory gives camera paths relative to it
    (upstream's shortening, kept; lidar_path stays as the devkit gives it). relative-root: upstream's way (run
    from the FlashOCC root with data/nuscenes): every path relative, as given, and occ_path ./ROOT/gts/..."""
    root = dirs["root"]
    cwd = dirs["string_prefix_cwd"] if case == "string-prefix-cwd" else root.parent
    root_arg = root.name if case == "relative-root" else str(root)
    tag = f"cwd-{case}"
    create_data(cwd, flashocc_root, root_arg, tag)
    cut = 0
    for split in ("train", "val"):
        generated, infos = load_infos(dirs["generated"], split)["infos"], load_infos(root, split, tag)["infos"]
        assert [i["token"] for i in infos] == [i["token"] for i in generated]
        for info in infos:
            (lidar, lidar_file), *cams = stored_and_files(info, nusc)
            assert lidar == f"{root_arg}/{lidar_file}"  # the devkit's path, never shortened
            for stored, filename in cams:
                if case == "string-prefix-cwd":
                    assert stored == f"{root}/{filename}"
                    # the case upstream got wrong: the working directory's path lies inside the root's
                    cut += stored.split(f"{cwd}/")[-1] == f"{root.name}/{filename}"
                else:
                    assert stored == f"{root.name}/{filename}"
            for stored, filename in [(lidar, lidar_file), *cams]:  # each names the set's file from cwd
                assert (cwd / stored).resolve() == (root / filename).resolve() and (cwd / stored).is_file()
            occ = f"./{root_arg}" if case == "relative-root" else str(root)
            assert info["occ_path"] == f"{occ}/gts/{info['scene_name']}/{info['token']}"
            assert (cwd / info["occ_path"] / "labels.npz").is_file()
    assert cut == (6 * 2 * OPTS.samples_per_scene if case == "string-prefix-cwd" else 0)


def train_env() -> dict[str, str]:
    """One CPU process, as the kit's smoke run sets up its ranks (FLASHOCC_DEVICE=cpu, no GPUs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHOCC_", "LOCAL_RANK", "RANK",
                                                                   "WORLD_SIZE", "MASTER_"))}
    env.update({"FLASHOCC_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"})  # threads: the caller's
    return env


def test_the_smoke_config_trains_on_the_converters_infos(converted, flashocc_root, tmp_path):
    import mmcv

    work = tmp_path / "work"
    root = f"{converted}/"
    data = []  # the run's cfg-options, as the kit's --data-root gives them (training/run.py)
    for split, infos in (("train", "train"), ("val", "val"), ("test", "val")):
        data += [f"data.{split}.data_root={root}", f"data.{split}.ann_file={root}{TAG}_infos_{infos}.pkl"]
    proc = subprocess.run(
        [sys.executable, "tools/train.py", SMOKE_CONFIG, "--work-dir", str(work), "--seed", "0", "--cfg-options",
         "data.samples_per_gpu=1", "data.workers_per_gpu=0", "log_config.interval=1", "runner.type=IterBasedRunner",
         f"runner.max_iters={MAX_ITERS}", "runner.max_epochs=None", "checkpoint_config.by_epoch=False",
         f"checkpoint_config.interval={MAX_ITERS}", *data],
        cwd=flashocc_root, env=train_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    used = mmcv.Config.fromfile(str(work / Path(SMOKE_CONFIG).name)).data  # the config as the run dumped it
    assert (used.train.ann_file, used.val.ann_file) == (f"{root}{TAG}_infos_train.pkl", f"{root}{TAG}_infos_val.pkl")
    assert not list(converted.glob("bevdetv2-nuscenes_infos_*.pkl"))  # nothing else to read there
    (log,) = work.glob("*.log.json")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    train = [r for r in records if r.get("mode") == "train"]
    assert [r["iter"] for r in train] == list(range(1, MAX_ITERS + 1))
    for record in train:
        losses = {k: v for k, v in record.items() if k.startswith("loss")}
        assert {"loss", "loss_occ", "loss_depth"} <= set(losses), record
        assert all(math.isfinite(v) and v > 0 for v in losses.values()), record
    assert (work / f"iter_{MAX_ITERS}.pth").is_file()
