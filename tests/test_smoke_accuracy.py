"""The smoke run learns, and only with the right geometry: the accuracy floor is a real check.

The trained smoke model must pass the gate against the CPU smoke baseline in tools/baselines.json
(mIoU >= baseline - tolerance: the floor); the same model evaluated with the sensor-to-ego extrinsics
shuffled between cameras must fall below it; and the floor must sit well above an untrained model.
One training serves them: conftest's smoke_accuracy_run, started in the background with the session.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KIT_ROOT

CASE = "FlashOCC_R50_cpusmoke_bs4_2p_acc"
CAMERAS = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")


def smoke_baseline() -> dict:
    entries = json.loads((KIT_ROOT / "tools" / "baselines.json").read_text())["baselines"]
    (entry,) = [e for e in entries if e.get("case_name") == CASE]
    return entry


def floor() -> float:
    entry = smoke_baseline()
    return entry["miou"] - entry["tolerances"]["miou_drop"]


def shuffle_extrinsics(src: Path, dst: Path) -> None:
    """Each camera gets another camera's mounting (sensor2ego): the images no longer match the geometry."""
    with src.open("rb") as fh:
        data = pickle.load(fh)
    for info in data["infos"]:
        mounts = [(info["cams"][c]["sensor2ego_rotation"], info["cams"][c]["sensor2ego_translation"])
                  for c in CAMERAS]
        for i, cam in enumerate(CAMERAS):
            info["cams"][cam]["sensor2ego_rotation"], info["cams"][cam]["sensor2ego_translation"] = \
                mounts[(i + 1) % len(CAMERAS)]
    with dst.open("wb") as fh:
        pickle.dump(data, fh)


def gate(summary: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(KIT_ROOT / "tools" / "kit.py"), "gate", "--summary", str(summary)],
                          capture_output=True, text=True)


def test_trained_smoke_model_clears_the_floor(smoke_accuracy_run):
    proc, summary = smoke_accuracy_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    miou = json.loads(summary.read_text())["accuracy"]["miou"]
    print(f"\nsmoke mIoU {miou:.2f}, floor {floor():.2f}")
    verdict = gate(summary)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert (summary.parent / "bev_gt_vs_prediction.png").stat().st_size > 10_000


def evaluate(flashocc: Path, checkpoint: Path | None = None, ann_file: Path | None = None) -> float:
    """mIoU (%) of the smoke model on the val set, here in this process: its initial weights (seed 0) or a
    checkpoint's, on the config's val infos or on ann_file."""
    import numpy as np
    import torch
    from mmcv import Config
    from mmcv.parallel import MMDataParallel
    from mmcv.runner import load_checkpoint
    from mmdet3d.datasets import build_dataloader, build_dataset
    from mmdet3d.models import build_model

    cfg = Config.fromfile(str(flashocc / "projects/configs/flashocc/flashocc-r50-smoke.py"))
    if ann_file is not None:
        cfg.data.test.ann_file = str(ann_file)
    cwd = os.getcwd()
    os.chdir(flashocc)  # the infos' paths are relative to the FlashOCC root
    try:
        torch.manual_seed(0)
        model = build_model(cfg.model, test_cfg=cfg.get("test_cfg"))
        model.init_weights()
        if checkpoint is not None:
            load_checkpoint(model, str(checkpoint), map_location="cpu", strict=True)
        model = MMDataParallel(model.eval())
        dataset = build_dataset(cfg.data.test, dict(test_mode=True))
        results = []
        with torch.no_grad():
            for batch in build_dataloader(dataset, 1, 0, dist=False, shuffle=False):
                results.extend(model(return_loss=False, rescale=True, **batch))
        return float(np.nanmean(dataset.evaluate(results)["mIoU"][:17]) * 100)
    finally:
        os.chdir(cwd)


def test_broken_camera_geometry_falls_below_the_floor(flashocc_root, smoke_accuracy_run, tmp_path):
    """The trained model, its cameras' sensor-to-ego extrinsics shuffled: the floor is cleared only through the
    camera geometry. (The same evaluation unshuffled gives the run's own figure, so the drop is the geometry's.)

    Until 2026-12 a second 10-epoch training with the extrinsics shuffled in train and val was held below the
    floor too (9.6 and 10.4 mIoU; docs/benchmarks.md); on a 2-core CI machine that run alone took a quarter of CI."""
    from flashocc_kit.occ3d import info_file
    from flashocc_kit.training.run import SMOKE_CONFIG, read_config

    proc, summary = smoke_accuracy_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # what the launcher evaluated (a smoke run: the last epoch, not the EMA)
    checkpoint = summary.parent.parent / "work" / f"epoch_{json.loads(summary.read_text())['epochs']}.pth"
    data = flashocc_root / read_config(flashocc_root, SMOKE_CONFIG).data_root
    shuffle_extrinsics(data / info_file("val"), tmp_path / "val.pkl")
    as_trained = evaluate(flashocc_root, checkpoint)
    shuffled = evaluate(flashocc_root, checkpoint, tmp_path / "val.pkl")
    print(f"\nsmoke mIoU {as_trained:.2f} here, with shuffled extrinsics {shuffled:.2f}, floor {floor():.2f}")
    assert as_trained == pytest.approx(json.loads(summary.read_text())["accuracy"]["miou"], abs=0.01)
    assert shuffled < floor() <= as_trained


def test_the_floor_is_well_above_an_untrained_model(flashocc_root):
    untrained = evaluate(flashocc_root)
    print(f"\nuntrained smoke model mIoU {untrained:.2f}, floor {floor():.2f}")
    assert floor() >= untrained + 3.0
