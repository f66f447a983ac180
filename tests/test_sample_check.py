"""The port's per-sample check (`check-data` and the dataset's failure sentences use it): each kind of damage to a
LiDAR sweep or an Occ3D label file is named with its file, and a sample that fails in the pipeline is described by
its token and what is wrong, or by the error itself when its files are sound."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

GRID = (4, 5, 2)


@pytest.fixture
def sample_check():
    return importlib.import_module("flashocc.projects.mmdet3d_plugin.datasets.sample_check")


def labels(directory: Path, **arrays: np.ndarray) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "labels.npz", **arrays)
    return directory


def sound_labels(directory: Path) -> Path:
    return labels(directory, semantics=np.zeros(GRID, np.uint8), mask_lidar=np.ones(GRID, np.uint8),
                  mask_camera=np.ones(GRID, np.uint8))


def test_a_lidar_sweep_that_is_missing_empty_or_cut_off_is_named(sample_check, tmp_path):
    sweep = tmp_path / "sweep.pcd.bin"
    assert sample_check.lidar_problem(str(sweep)) == "missing"
    np.zeros((3, 5), np.float32).tofile(sweep)
    assert sample_check.lidar_problem(str(sweep)) is None
    for size in (0, 3 * 20 + 7):
        sweep.write_bytes(b"\0" * size)
        assert sample_check.lidar_problem(str(sweep)).startswith(f"{size} bytes: not a whole number of 5-float32")


def test_each_kind_of_damage_to_a_label_file_is_named(sample_check, tmp_path):
    check = sample_check.occupancy_problem
    assert check(str(sound_labels(tmp_path / "sound")), GRID, 18) is None
    path, why = check(str(tmp_path / "absent"), GRID, 18)
    assert path.endswith("absent/labels.npz") and why.startswith("missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "labels.npz").write_bytes(b"PK\3\4 cut off")
    assert check(str(broken), GRID, 18)[1].startswith("does not load:")
    partial = labels(tmp_path / "partial", semantics=np.zeros(GRID, np.uint8))
    assert check(str(partial), GRID, 18)[1] == "has no mask_lidar, mask_camera"
    small = labels(tmp_path / "small", semantics=np.zeros((2, 2, 2)), mask_lidar=np.zeros(GRID),
                   mask_camera=np.zeros(GRID))
    assert check(str(small), GRID, 18)[1].startswith("arrays of shapes {'semantics': (2, 2, 2)")
    ranged = labels(tmp_path / "ranged", semantics=np.full(GRID, 18, np.uint8), mask_lidar=np.zeros(GRID),
                    mask_camera=np.zeros(GRID))
    assert check(str(ranged), GRID, 18)[1] == "semantics range 18..18, expected 0..17"


def test_a_sample_is_checked_field_by_field_and_file_by_file(sample_check, tmp_path):
    info = {"token": "t0", "cams": {}, "lidar_path": str(tmp_path / "none.bin"), "occ_path": str(tmp_path / "gts"),
            "ego2global_translation": [1.0, "x", 0.0]}
    problems = sample_check.check_sample(info, grid_shape=GRID)
    assert "no timestamp (not made by tools/create_data_bevdet.py?)" in problems
    assert "ego2global_translation is not finite: [1.0, 'x', 0.0]" in problems  # not a number at all
    assert f"{tmp_path / 'none.bin'}: missing" in problems
    assert any(p.startswith(f"{tmp_path / 'gts' / 'labels.npz'}: missing") for p in problems)
    no_files = sample_check.check_sample(info, grid_shape=GRID, files=False)
    assert no_files == [p for p in problems if p.startswith(("no ", "ego2global"))] and len(no_files) < len(problems)


def test_a_failed_sample_is_described_by_its_files_or_else_by_its_error(sample_check, tmp_path):
    info = {"token": "t1", "lidar_path": str(tmp_path / "none.bin")}
    sentence = sample_check.describe_failure(info, 7, KeyError("cams"))
    assert sentence.startswith("sample t1 (index 7): no cams") and f"{tmp_path / 'none.bin'}: missing" in sentence
    assert sample_check.describe_failure(None, 3, ValueError("bad")) == "sample ? (index 3): ValueError: bad"


def test_poses_that_are_not_finite_stop_the_sample(sample_check):
    sample_check.finite_or_raise({"token": "t2", "lidar2ego_translation": [0.0, 0.0, 1.8]}, 0)
    with pytest.raises(ValueError, match=r"sample t2 \(index 5\): lidar2ego_translation is not finite: \[nan"):
        sample_check.finite_or_raise({"token": "t2", "lidar2ego_translation": [float("nan"), 0.0, 1.8]}, 5)
