"""The metrics JSON the patched tools/test.py writes (port: metrics_file.py) and the kit's summaries read."""

from __future__ import annotations

import importlib
import json
import math

import pytest

from flashocc_kit.errors import KitError
from flashocc_kit.occ3d import OCC_CLASSES, SCORED_CLASSES
from flashocc_kit.results import logparse

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

np = pytest.importorskip("numpy", reason="the port's metrics module needs numpy (the kit's environment has it)")


class Counter:
    """What Metric_mIoU leaves on the dataset after evaluate(): class names, class count, samples seen."""

    class_names = list(OCC_CLASSES)
    num_classes = len(OCC_CLASSES)
    cnt = 24


class Dataset:
    occ_eval_metrics = Counter()


def metrics_module():
    return importlib.import_module("flashocc.projects.mmdet3d_plugin.core.evaluation.metrics_file")


def test_the_port_writes_what_count_miou_prints(tmp_path):
    per_class = np.linspace(0.1, 0.9, len(OCC_CLASSES))
    per_class[2] = np.nan  # a class absent from prediction and ground truth
    path = metrics_module().write_metrics(tmp_path / "results.metrics.json", "mIoU", {"mIoU": per_class}, Dataset())
    data = json.loads(path.read_text())
    assert data["metric"] == "mIoU" and data["samples"] == 24
    assert list(data["per_class_iou"]) == list(SCORED_CLASSES)  # 'free' is not scored
    assert data["per_class_iou"]["bicycle"] is None
    assert data["per_class_iou"]["others"] == round(0.1 * 100, 2)
    assert data["miou"] == round(float(np.nanmean(per_class[:-1])) * 100, 2)


def test_ray_iou_results_are_written_as_values(tmp_path):
    results = {"RayIoU": 0.25, "RayIoU@1": 0.2, "RayPQ": float("nan")}
    path = metrics_module().write_metrics(tmp_path / "m.json", "ray-iou", results, Dataset())
    data = json.loads(path.read_text())
    assert data["values"] == {"RayIoU": 0.25, "RayIoU@1": 0.2, "RayPQ": None} and "miou" not in data


def test_the_kit_reads_the_file_in_preference_to_the_printed_text(tmp_path):
    per_class = np.full(len(OCC_CLASSES), 0.5)
    path = metrics_module().write_metrics(tmp_path / "results.metrics.json", "mIoU", {"mIoU": per_class}, Dataset())
    console = tmp_path / "eval_console.log"
    console.write_text("".join(f"===> {n} - IoU = 10.0\n" for n in SCORED_CLASSES) + "===> mIoU of 24 samples: 10.0\n")
    assert logparse.parse_eval([console]).miou == 10.0  # without the file: the text
    result = logparse.parse_eval([console], None, path)
    assert result.miou == 50.0 and result.samples == 24 and result.source == f"metrics file {path}"
    assert not math.isnan(result.per_class["car"]) and result.per_class["car"] == 50.0


def test_a_metrics_file_without_miou_is_a_clear_error(tmp_path):
    path = tmp_path / "results.metrics.json"
    path.write_text(json.dumps({"metric": "ray-iou", "values": {}}))
    with pytest.raises(KitError, match="holds no mIoU"):
        logparse.parse_eval([], None, path)
    path.write_text("{not json")
    with pytest.raises(KitError, match="not readable JSON"):
        logparse.parse_eval([], None, path)
