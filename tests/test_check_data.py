"""`kit.py check-data` on a good synthetic set and on each kind of damage, each reported by name; the same damage
inside a real two-rank CPU run gives an error naming the sample and the file."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KIT_ROOT
from test_cpu_runs import run_env

pytest.importorskip("mmcv", reason="needs mmcv: run the suite in the kit's environment")
SMOKE_CONFIG = "projects/configs/flashocc/flashocc-r50-smoke.py"


@pytest.fixture(scope="module")
def good_set(tmp_path_factory, flashocc_root):
    from flashocc_kit.synth.generate import generate
    from flashocc_kit.synth.options import SynthOptions

    root = tmp_path_factory.mktemp("data") / "nuscenes"
    generate(SynthOptions(width=352, height=198, train_scenes=1, val_scenes=1, samples_per_scene=2, workers=1),
             root, str(root))
    return root


@pytest.fixture
def data(good_set, tmp_path):
    copy = tmp_path / "nuscenes"
    shutil.copytree(good_set, copy)
    for split in ("train", "val"):  # the copy's infos name the copy's files
        path, loaded = infos(copy, split)
        with path.open("wb") as fh:
            pickle.dump(retarget(loaded, str(good_set), str(copy)), fh)
    return copy


def retarget(value, old: str, new: str):
    if isinstance(value, str):
        return new + value[len(old):] if value.startswith(old) else value
    if isinstance(value, dict):
        return {k: retarget(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [retarget(v, old, new) for v in value]
    return value


def check(flashocc_root, data, *args: str, config: str = SMOKE_CONFIG) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, str(KIT_ROOT / "tools" / "kit.py"), "check-data", "--data-root",
                           str(data), "--config", config, "--workers", "2", "--json", *args], cwd=flashocc_root,
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout)


def infos(data, split="train"):
    path = data / f"bevdetv2-nuscenes_infos_{split}.pkl"
    with path.open("rb") as fh:
        return path, pickle.load(fh)


def test_a_good_set_passes_every_sample(flashocc_root, data):
    code, report = check(flashocc_root, data)
    assert (code, report["problems"]) == (0, []) and report["checked"] == {"train": 2, "val": 2}


def test_each_kind_of_damage_is_reported_by_name(flashocc_root, data):
    _, train = infos(data)
    first, second = train["infos"]
    deleted = first["cams"]["CAM_FRONT"]["data_path"]
    Path(deleted).unlink()
    truncated = second["cams"]["CAM_BACK"]["data_path"]
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:2000])
    gts = Path(second["occ_path"]) / "labels.npz"
    gts.unlink()
    val_path, val = infos(data, "val")
    del val["infos"][0]["occ_path"]
    val["infos"][1]["cams"]["CAM_FRONT_LEFT_X"] = val["infos"][1]["cams"].pop("CAM_FRONT_LEFT")
    with val_path.open("wb") as fh:
        pickle.dump(val, fh)
    code, report = check(flashocc_root, data)
    text = "\n".join(report["problems"])
    assert code == 1
    assert f"sample {first['token']}: {deleted} (CAM_FRONT): missing" in text
    assert f"sample {second['token']}: {truncated} (CAM_BACK): does not decode" in text
    assert f"sample {second['token']}: {gts}: missing" in text
    assert f"sample {val['infos'][0]['token']}: no occ_path (not made by tools/create_data_bevdet.py?)" in text
    assert "CAM_FRONT_LEFT_X" in text and "the config expects" in text
    code, quick = check(flashocc_root, data, "--sample", "1")
    assert quick["checked"] == {"train": 1, "val": 1}


def test_missing_infos_and_the_pretrained_checkpoint_say_where_to_get_them(flashocc_root, tmp_path):
    (tmp_path / "empty").mkdir()  # a data root without its info files (one that does not exist is bad input)
    code, report = check(flashocc_root, tmp_path / "empty", config="projects/configs/flashocc/flashocc-r50.py")
    text = "\n".join(report["problems"])
    assert code == 1 and "bevdetv2-nuscenes_infos_train.pkl: missing. Fix: python tools/create_data_bevdet.py" in text
    if not (flashocc_root / "ckpts" / "bevdet-r50-cbgs.pth").exists():
        assert "ckpts/bevdet-r50-cbgs.pth: missing (the config's load_from). Get it from https://drive" in text


def test_a_truncated_image_inside_a_real_run_names_the_sample_and_the_file(flashocc_root, data, tmp_path):
    _, train = infos(data)
    victim = train["infos"][1]
    truncated = victim["cams"]["CAM_BACK_RIGHT"]["data_path"]
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:1500])
    proc = subprocess.run(["bash", "test/train_8p_flashocc_r50_perf.sh", "--smoke", "--max-iters", "3",
                           "--data-root", str(data), "--no-data-check", "--work-dir", str(tmp_path / "work"),
                           "--output-dir", str(tmp_path / "out")], cwd=flashocc_root, env=run_env(),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode != 0
    assert f"sample {victim['token']}" in proc.stderr
    assert f"{truncated} (CAM_BACK_RIGHT): does not decode" in proc.stderr
    assert proc.stderr.count("last error: RuntimeError: sample") == 1, proc.stderr[-3000:]


def test_the_launcher_checks_a_few_samples_before_torchrun(flashocc_root, data, tmp_path):
    _, train = infos(data)
    Path(train["infos"][0]["occ_path"], "labels.npz").unlink()
    proc = subprocess.run(["bash", "test/train_8p_flashocc_r50_perf.sh", "--smoke", "--max-iters", "3",
                           "--data-root", str(data), "--work-dir", str(tmp_path / "work"),
                           "--output-dir", str(tmp_path / "out")], cwd=flashocc_root, env=run_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "the data check before training found problems" in proc.stderr
    assert "labels.npz: missing" in proc.stderr and "torch.distributed.run" not in proc.stdout
