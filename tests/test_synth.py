"""`kit.py synth`: the synthetic Occ3D-nuScenes set -- reproducible, in FlashOCC's format, geometrically
consistent, and careful with the directory it writes to. The last test feeds it to FlashOCC's own train
pipeline when FlashOCC and mmdet3d are importable."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import KIT_ROOT, NOT_APPLICABLE
from flashocc_kit.errors import KitError
from flashocc_kit.occ3d import (
    CAMERAS,
    DET_CLASSES,
    FREE,
    GRID_LO,
    GRID_SHAPE,
    OCC,
    PANOPTIC_DIR,
    THING_CLASSES,
    VOXEL,
    info_file,
)
from flashocc_kit.synth import options, target

np = pytest.importorskip("numpy", reason="the generator needs numpy: run with the kit's environment")
pytest.importorskip("cv2", reason="the generator needs OpenCV: run with the kit's environment")
pyquaternion = pytest.importorskip("pyquaternion", reason="the generator needs pyquaternion")

from flashocc_kit.synth.generate import generate  # noqa: E402
from flashocc_kit.synth.options import SynthOptions  # noqa: E402
from flashocc_kit.synth.validate import validate  # noqa: E402
from flashocc_kit.synth.writer import npz_bytes  # noqa: E402

PREFIX = "data/nuscenes"  # relative, as create_data_bevdet.py writes them; resolved from the run directory
SMALL = SynthOptions(width=352, height=198, train_scenes=2, val_scenes=1, samples_per_scene=2, seed=7, workers=1)


def make(base: Path, opts: SynthOptions = SMALL, **kwargs) -> dict:
    return generate(opts, base / PREFIX, PREFIX, progress=False, **kwargs)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def load(root: Path, split: str) -> dict:
    return pickle.loads((root / info_file(split)).read_bytes())


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, dict]:
    """One generated set, shared: (the directory training would run from, the generator's summary)."""
    base = tmp_path_factory.mktemp("run")
    return base, make(base)


def test_same_seed_same_bytes_whatever_the_worker_count(small_set, tmp_path):
    base, _ = small_set
    make(tmp_path, replace(SMALL, workers=2))
    first, second = files_of(base / PREFIX), files_of(tmp_path / PREFIX)
    assert first.keys() == second.keys()
    kinds = {Path(name).suffix for name in first}
    assert {".pkl", ".npz", ".jpg", ".bin", ".json"} <= kinds
    assert [name for name in first if first[name] != second[name]] == []

    other = tmp_path / "other"
    make(other, replace(SMALL, seed=8))
    assert load(other / PREFIX, "train") != load(base / PREFIX, "train")
    assert np.load(next((other / PREFIX / "gts").rglob("labels.npz")))["semantics"].tobytes() != \
        np.load(next((base / PREFIX / "gts").rglob("labels.npz")))["semantics"].tobytes()


def test_infos_have_every_field_the_pipeline_and_dataset_read(small_set):
    base, summary = small_set
    root = base / PREFIX
    assert (summary["train"], summary["val"]) == (4, 2)
    train, val = load(root, "train"), load(root, "val")
    assert train["metadata"] == {"version": "v1.0-trainval"}
    assert {i["scene_token"] for i in train["infos"]}.isdisjoint({i["scene_token"] for i in val["infos"]})
    for info in train["infos"] + val["infos"]:
        # Paths are os.path.join(<root as given>, ...), like the converter's; they resolve from the run directory.
        assert info["lidar_path"].startswith(PREFIX + "/samples/LIDAR_TOP/")
        assert info["occ_path"] == os.path.join(PREFIX, "gts", info["scene_name"], info["token"])
        assert info["scene_name"].startswith("scene-") and len(info["token"]) == 32
        assert info["sweeps"] == [] and isinstance(info["timestamp"], int)
        points = np.fromfile(base / info["lidar_path"], dtype=np.float32).reshape(-1, 5)
        assert len(points) > 10_000 and set(np.unique(points[:, 4])) <= set(range(32))
        labels = np.load(base / info["occ_path"] / "labels.npz")
        assert sorted(labels.files) == ["mask_camera", "mask_lidar", "semantics"]
        for key in labels.files:
            assert labels[key].dtype == np.uint8 and labels[key].shape == GRID_SHAPE
        assert labels["semantics"].max() == FREE and set(np.unique(labels["mask_camera"])) == {0, 1}
        assert 0.05 < labels["mask_camera"].mean() < 0.8 and 0.005 < labels["mask_lidar"].mean() < 0.5
        assert sorted(info["cams"]) == sorted(CAMERAS)
        for cam, cam_info in info["cams"].items():
            assert cam_info["type"] == cam and cam_info["timestamp"] == info["timestamp"]
            assert cam_info["data_path"].startswith(f"{PREFIX}/samples/{cam}/")
            assert len(cam_info["sensor2ego_rotation"]) == 4 and len(cam_info["sensor2ego_translation"]) == 3
            assert cam_info["ego2global_translation"] == info["ego2global_translation"]
            assert np.asarray(cam_info["cam_intrinsic"]).shape == (3, 3)
            # sensor2lidar agrees with sensor2ego and lidar2ego (the converter's points @ R.T + T).
            c2e = pyquaternion.Quaternion(cam_info["sensor2ego_rotation"]).rotation_matrix
            l2e = pyquaternion.Quaternion(info["lidar2ego_rotation"]).rotation_matrix
            np.testing.assert_allclose(cam_info["sensor2lidar_rotation"], l2e.T @ c2e, atol=1e-9)
            np.testing.assert_allclose(cam_info["sensor2lidar_translation"], l2e.T @ (
                np.array(cam_info["sensor2ego_translation"]) - info["lidar2ego_translation"]), atol=1e-9)
        # Realistic global poses: hundreds to thousands of metres.
        assert 100 < np.hypot(*info["ego2global_translation"][:2]) < 5000
        # ann_infos is get_gt()'s (boxes, labels); gt_boxes the same boxes in the LiDAR frame.
        boxes, labels_ = info["ann_infos"]
        assert len(boxes) == len(labels_) == int(info["valid_flag"].sum()) > 0
        assert all(b.shape == (9,) for b in boxes) and all(0 <= label < len(DET_CLASSES) for label in labels_)
        assert info["gt_boxes"].shape == (len(info["gt_names"]), 7)
        assert info["valid_flag"].dtype == bool and (info["valid_flag"] == (info["num_lidar_pts"] > 0)).all()
        valid = info["gt_boxes"][info["valid_flag"]]
        centres = valid[:, :3] @ l2e.T + info["lidar2ego_translation"]
        np.testing.assert_allclose(centres, np.array(boxes)[:, :3], atol=1e-6)
        assert list(info["gt_names"][info["valid_flag"]]) == [DET_CLASSES[label] for label in labels_]
    stamps = [i["timestamp"] for i in train["infos"]]
    assert stamps == sorted(stamps)  # and scenes contiguous once sorted, as get_adj_info assumes
    scenes = [i["scene_token"] for i in train["infos"]]
    assert scenes == sorted(scenes, key=scenes.index)


def test_extrinsics_follow_nuscenes_conventions(small_set):
    """sensor2ego maps camera axes (x right, y down, z forward) to ego axes (x forward, y left, z up)."""
    base, _ = small_set
    info = load(base / PREFIX, "train")["infos"][0]
    looking = {"CAM_FRONT": (1, 0), "CAM_BACK": (-1, 0), "CAM_FRONT_LEFT": (0.57, 0.82),
               "CAM_FRONT_RIGHT": (0.57, -0.82), "CAM_BACK_LEFT": (-0.34, 0.94), "CAM_BACK_RIGHT": (-0.34, -0.94)}
    for cam, (x, y) in looking.items():
        rotation = pyquaternion.Quaternion(info["cams"][cam]["sensor2ego_rotation"]).rotation_matrix
        np.testing.assert_allclose(rotation @ (0, 0, 1), (x, y, 0), atol=0.03)  # optical axis, level
        np.testing.assert_allclose(rotation @ (0, 1, 0), (0, 0, -1), atol=0.03)  # image down is ego down
        np.testing.assert_allclose(rotation @ (1, 0, 0), (y, -x, 0), atol=0.03)  # image right is to the right
        assert 1.4 < info["cams"][cam]["sensor2ego_translation"][2] < 1.7
    intrinsic = info["cams"]["CAM_FRONT"]["cam_intrinsic"]
    assert abs(intrinsic[0, 0] - 1266 * SMALL.width / 1600) < 10 and intrinsic[0, 1] == 0
    lidar = pyquaternion.Quaternion(info["lidar2ego_rotation"]).rotation_matrix
    np.testing.assert_allclose(lidar @ (0, 1, 0), (1, 0, 0), atol=0.01)  # LIDAR_TOP's y points forward
    assert 1.7 < info["lidar2ego_translation"][2] < 1.9


def test_lidar_points_lie_on_the_labelled_voxels(small_set):
    """lidar2ego from the infos puts the points onto occupied voxels (a wrong lidar pose would not)."""
    base, _ = small_set
    info = load(base / PREFIX, "val")["infos"][0]
    points = np.fromfile(base / info["lidar_path"], dtype=np.float32).reshape(-1, 5)[:, :3].astype(float)
    l2e = pyquaternion.Quaternion(info["lidar2ego_rotation"]).rotation_matrix
    ego = points @ l2e.T + info["lidar2ego_translation"]
    semantics = np.load(base / info["occ_path"] / "labels.npz")["semantics"]
    cells = np.floor((ego - (-40, -40, -1)) / 0.4).astype(int)
    inside = ((cells >= 0) & (cells < GRID_SHAPE)).all(axis=1)
    occupied = np.zeros(len(ego), dtype=bool)
    for shift in np.array([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]):
        near = np.clip(cells + shift, 0, np.array(GRID_SHAPE) - 1)
        occupied |= semantics[near[:, 0], near[:, 1], near[:, 2]] != FREE
    assert occupied[inside].mean() > 0.99


def panoptic_file(base: Path, info: dict) -> Path:
    """Where --eval ray-iou reads a sample's panoptic labels: occ3d_panoptic/<scene>/<token>/, beside gts/."""
    return base / PREFIX / PANOPTIC_DIR / info["scene_name"] / info["token"] / "labels.npz"


def match_all(candidates: list[set[int]]) -> bool:
    """Whether each instance can be given its own box among its candidates (Kuhn's augmenting paths)."""
    owner: dict[int, int] = {}

    def place(i: int, tried: set[int]) -> bool:
        for box in candidates[i] - tried:
            tried.add(box)
            if box not in owner or place(owner[box], tried):
                owner[box] = i
                return True
        return False

    return all(place(i, set()) for i in range(len(candidates)))


def test_panoptic_labels_give_each_object_its_own_instance(small_set):
    """occ3d_panoptic/: the gts labels as they are plus `instances`, as SparseOcc's gen_instance_info.py writes them
    (uint8, 0 on stuff and free): every thing voxel in some instance, each instance of one thing class and lying
    inside an annotated box of that class, no two instances in the same box."""
    base, _ = small_set
    root = base / PREFIX
    assert (root / PANOPTIC_DIR).is_dir() and PANOPTIC_DIR in target.GENERATED
    things = [OCC[name] for name in THING_CLASSES]
    judged = 0
    for info in load(root, "train")["infos"] + load(root, "val")["infos"]:
        gts = np.load(base / info["occ_path"] / "labels.npz")
        panoptic = np.load(panoptic_file(base, info))
        assert panoptic.files == ["semantics", "mask_lidar", "mask_camera", "instances"]
        for key in gts.files:
            np.testing.assert_array_equal(panoptic[key], gts[key])
        instances, semantics = panoptic["instances"], gts["semantics"]
        assert instances.dtype == np.uint8 and instances.shape == GRID_SHAPE
        thing = np.isin(semantics, things)
        assert thing.any() and (instances[thing] > 0).all() and (instances[~thing] == 0).all()
        count = int(instances.max())
        assert set(np.unique(instances[thing])) == set(range(1, count + 1))
        # the annotated boxes (all of them, in the LiDAR frame) against each instance's voxel centres
        l2e = pyquaternion.Quaternion(info["lidar2ego_rotation"]).rotation_matrix
        candidates = []
        for number in range(1, count + 1):
            cells = np.argwhere(instances == number)
            (cls,) = np.unique(semantics[instances == number])
            centres = np.array(GRID_LO) + VOXEL * (cells + 0.5)
            if np.abs(centres[:, :2]).max() >= 30:
                continue  # its box may lie beyond the 55 m the annotations reach
            points = (centres - info["lidar2ego_translation"]) @ l2e  # ego -> LiDAR frame
            inside = set()
            for b, (box, name) in enumerate(zip(info["gt_boxes"], info["gt_names"])):
                if OCC[name] != cls:
                    continue
                x, y, z, length, width, height, yaw = box
                d = points - (x, y, z)
                along, across = np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1], -np.sin(yaw) * d[:, 0] + np.cos(
                    yaw) * d[:, 1]
                # column centres in the footprint; a voxel is painted where its height range meets the box's
                if ((np.abs(along) <= length / 2 + 1e-4) & (np.abs(across) <= width / 2 + 1e-4)
                        & (np.abs(d[:, 2]) <= height / 2 + VOXEL / 2 + 1e-4)).all():
                    inside.add(b)
            assert inside, f"sample {info['token']}: instance {number} (class {cls}) lies in no box of its class"
            candidates.append(inside)
        assert match_all(candidates), f"sample {info['token']}: two instances share one object"
        judged += len(candidates)
    assert judged >= 20


def test_validation_checks_the_panoptic_labels(small_set, tmp_path):
    base, _ = small_set
    root = tmp_path / PREFIX
    shutil.copytree(base / PREFIX, root)
    first, second, third = load(root, "train")["infos"][:2] + load(root, "val")["infos"][:1]
    panoptic_file(tmp_path, first).unlink()
    # second: one instance id spread over two classes
    path = panoptic_file(tmp_path, second)
    labels = dict(np.load(path))
    instances, semantics = labels["instances"], labels["semantics"]
    classes = {n: semantics[instances == n][0] for n in range(1, int(instances.max()) + 1)}
    other = next(n for n, cls in classes.items() if cls != classes[1])  # the seed's sample has cars and pedestrians
    instances[instances == other] = 1
    path.write_bytes(npz_bytes(labels))
    # third: semantics other than the gts'
    path = panoptic_file(tmp_path, third)
    labels = dict(np.load(path))
    labels["semantics"] = np.where(labels["semantics"] == OCC["vegetation"], OCC["manmade"], labels["semantics"])
    path.write_bytes(npz_bytes(labels))
    with pytest.raises(KitError) as err:
        validate(root, PREFIX)
    text = str(err.value)
    assert f"sample {first['token']}: panoptic labels file {panoptic_file(Path(''), first)} missing" in text
    assert f"sample {second['token']}: {panoptic_file(tmp_path, second)}: instance ids of several classes: 1" in text
    assert f"sample {third['token']}: {panoptic_file(tmp_path, third)}: semantics missing or not the gts'" in text


def test_geometric_check_catches_swapped_or_inverted_extrinsics(small_set, tmp_path):
    base, summary = small_set
    assert all(score >= 0.85 for split in summary["validation"]["geometry"].values() for score in split.values())
    for name, corrupt in (
        ("swapped", lambda cams: swap(cams, "CAM_FRONT", "CAM_BACK")),
        ("ego2sensor", lambda cams: [c.update(sensor2ego_rotation=list(
            pyquaternion.Quaternion(c["sensor2ego_rotation"]).inverse.elements)) for c in cams.values()]),
    ):
        root = tmp_path / name / PREFIX
        shutil.copytree(base / PREFIX, root)
        data = load(root, "train")
        for info in data["infos"]:
            corrupt(info["cams"])
        (root / info_file("train")).write_bytes(pickle.dumps(data))
        with pytest.raises(KitError, match="do not match its image") as err:
            validate(root, PREFIX)
        if name == "swapped":
            assert "CAM_FRONT" in str(err.value) or "CAM_BACK" in str(err.value)


def swap(cams: dict, a: str, b: str) -> None:
    for key in ("sensor2ego_rotation", "sensor2ego_translation"):
        cams[a][key], cams[b][key] = cams[b][key], cams[a][key]


def test_validation_reports_missing_and_broken_files(small_set, tmp_path):
    base, _ = small_set
    root = tmp_path / PREFIX
    shutil.copytree(base / PREFIX, root)
    info = load(root, "val")["infos"][0]
    (tmp_path / info["cams"]["CAM_FRONT"]["data_path"]).unlink()
    (tmp_path / info["lidar_path"]).write_bytes(b"\0" * 12)
    with pytest.raises(KitError) as err:
        validate(root, PREFIX)
    assert "CAM_FRONT file" in str(err.value) and "not float32 rows of 5" in str(err.value)


def test_refuses_a_directory_it_did_not_write(tmp_path):
    real = tmp_path / PREFIX
    (real / "samples" / "CAM_FRONT").mkdir(parents=True)
    (real / "samples" / "CAM_FRONT" / "n015.jpg").write_bytes(b"real data")
    before = files_of(real)
    with pytest.raises(KitError, match=f"no {target.MARKER}.*left alone"):
        make(tmp_path, overwrite=True)
    assert files_of(real) == before and siblings(real) == ["nuscenes"]


def test_replaces_its_own_set_only_with_overwrite(tmp_path):
    opts = replace(SMALL, train_scenes=1, samples_per_scene=1, width=192, height=108)
    make(tmp_path, opts)
    root = tmp_path / PREFIX
    before = files_of(root)
    with pytest.raises(KitError, match="--overwrite"):
        make(tmp_path, replace(opts, seed=9))
    assert files_of(root) == before

    make(tmp_path, replace(opts, seed=9), overwrite=True)
    assert target.read_marker(root)["seed"] == 9 and files_of(root) != before
    assert siblings(root) == ["nuscenes"]  # no staging or old directory left behind

    (root / "my_checkpoint.pth").write_bytes(b"precious")
    with pytest.raises(KitError, match="my_checkpoint.pth"):
        make(tmp_path, opts, overwrite=True)
    assert (root / "my_checkpoint.pth").exists()


def test_a_failure_leaves_the_previous_set_and_no_debris(tmp_path, monkeypatch):
    opts = replace(SMALL, train_scenes=1, samples_per_scene=1, width=192, height=108)
    make(tmp_path, opts)
    root = tmp_path / PREFIX
    before = files_of(root)

    def broken(*args, **kwargs):
        raise KitError("validation failed (simulated)")

    monkeypatch.setattr("flashocc_kit.synth.validate.validate", broken)
    with pytest.raises(KitError, match="simulated"):
        make(tmp_path, replace(opts, seed=3), overwrite=True)
    assert files_of(root) == before and siblings(root) == ["nuscenes"]


def test_unwritable_directory(tmp_path):
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        out = locked / "nuscenes"
    else:  # root writes anywhere a mode allows; sysfs refuses new directories even to root
        out = Path("/sys/flashocc-kit-synth-test/nuscenes")
        try:
            out.parent.mkdir()
        except OSError:
            pass
        else:
            out.parent.rmdir()
            pytest.skip(f"{NOT_APPLICABLE} running as root and /sys accepts new directories: no unwritable place to "
                        "test")
    with pytest.raises(KitError, match="cannot (write|create).*Fix: choose a writable --out"):
        generate(SMALL, out, str(out), progress=False)
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"train_scenes": 0}, "--train-scenes 0: must be between 1 and"),
    ({"val_scenes": -2}, "--val-scenes -2: must be between 1 and"),
    ({"samples_per_scene": 41}, "--samples-per-scene 41: must be between 1 and 40"),
    ({"width": 32, "height": 18}, "--image-size 32x18: out of range; allowed: 64x36 to 3200x1800"),
    ({"width": 4000, "height": 2250}, "--image-size 4000x2250: out of range"),
    ({"width": 400, "height": 400}, "--image-size 400x400: aspect 1.000 is not 16:9"),
    ({"train_scenes": 1000, "val_scenes": 1000, "samples_per_scene": 40}, "80000 samples requested"),
])
def test_impossible_sizes_are_refused_naming_the_option(change, message, tmp_path):
    with pytest.raises(KitError, match=message.replace("(", r"\(")):
        generate(replace(SMALL, **change), tmp_path / "out", "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_image_size_syntax():
    assert options.parse_image_size("704x396") == (704, 396)
    for bad in ("704", "704x", "axb", "704*396"):
        with pytest.raises(KitError, match="expected WIDTHxHEIGHT"):
            options.parse_image_size(bad)


def test_cli_reruns_itself_in_the_workspace_environment(tmp_path):
    """`kit.py synth` under an interpreter without numpy re-executes itself with <workspace>/.venv's."""
    workspace = tmp_path / "ws"
    (workspace / ".venv" / "bin").mkdir(parents=True)
    python = workspace / ".venv" / "bin" / "python"  # stands in for the environment `setup` makes
    calls = tmp_path / "calls"
    python.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    (workspace / "FlashOCC").mkdir()

    def kit(*args: str) -> subprocess.CompletedProcess:
        # -S: no site-packages, so this interpreter has no numpy whatever is installed for it
        return subprocess.run([sys.executable, "-S", str(KIT_ROOT / "tools" / "kit.py"), "--workspace", str(workspace),
                               "synth", *args], capture_output=True, text=True)

    proc = kit("--image-size", "192x108", "--train-scenes", "1", "--val-scenes", "1", "--samples-per-scene", "1",
               "--workers", "1", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    assert "kit.py --workspace" in calls.read_text() and " synth --image-size 192x108" in calls.read_text()
    root = workspace / "FlashOCC" / "data" / "nuscenes"  # relative --out: from the FlashOCC checkout
    assert target.read_marker(root)["seed"] == 5
    assert load(root, "val")["infos"][0]["lidar_path"].startswith("data/nuscenes/samples/")

    calls.unlink()
    proc = kit("--image-size", "192x108")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    proc = kit("--image-size", "10x10")
    assert proc.returncode == 2 and "--image-size 10x10" in proc.stderr
    assert not calls.exists()  # both refused before any other interpreter was started


def test_flashocc_train_pipeline_reads_the_set(small_set, monkeypatch, capsys):
    """FlashOCC's real train pipeline (flashocc-r50.py) on a generated sample: shapes, labels and depth."""
    flashocc = KIT_ROOT / "FlashOCC"
    if not (flashocc / "projects" / "configs" / "flashocc" / "flashocc-r50.py").is_file():
        pytest.skip(f"no FlashOCC checkout at {flashocc} (run `kit.py sources`)")
    try:
        import torch
        from mmcv import Config
        from mmdet3d.datasets import build_dataset
    except ImportError as exc:
        pytest.skip(f"mmcv/mmdet3d do not import in {sys.executable}: {exc}")
    monkeypatch.syspath_prepend(str(flashocc))
    try:
        import projects.mmdet3d_plugin  # noqa: F401  (registers FlashOCC's datasets and pipelines)
    except Exception as exc:  # CUDA-only ops not patched yet, for instance
        reason = f"FlashOCC's plugin does not import yet: {type(exc).__name__}: {exc}"
        with capsys.disabled():
            print(f"\nSKIP {reason}")
        pytest.skip(reason)

    base, summary = small_set
    monkeypatch.chdir(base)  # the infos' relative paths resolve from where training runs
    cfg = Config.fromfile(str(flashocc / "projects" / "configs" / "flashocc" / "flashocc-r50.py"))
    cfg.data.train.data_root = PREFIX + "/"
    cfg.data.train.ann_file = f"{PREFIX}/{info_file('train')}"
    # flashocc-r50 reads no depth; add the LiDAR depth steps as the depth-supervised configs have them
    pipeline = cfg.data.train.pipeline
    at = next(i for i, step in enumerate(pipeline) if step["type"] == "DefaultFormatBundle3D")
    pipeline[at:at] = [dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=5, use_dim=5),
                       dict(type="PointToMultiViewDepth", downsample=1, grid_config=cfg.grid_config)]
    pipeline[-1]["keys"] = [*pipeline[-1]["keys"], "gt_depth"]
    dataset = build_dataset(cfg.data.train)
    assert len(dataset) == summary["train"]
    np.random.seed(0)  # the pipeline's augmentation draws from numpy's global generator
    item = dataset[1]

    imgs, sensor2egos, ego2globals, intrins, post_rots, post_trans, bda = item["img_inputs"]
    assert imgs.shape == (6, 3, 256, 704) and imgs.dtype == torch.float32
    assert sensor2egos.shape == ego2globals.shape == (6, 4, 4) and intrins.shape == (6, 3, 3)
    semantics = item["voxel_semantics"].data if hasattr(item["voxel_semantics"], "data") else item["voxel_semantics"]
    mask_camera = item["mask_camera"].data if hasattr(item["mask_camera"], "data") else item["mask_camera"]
    assert semantics.shape == mask_camera.shape == GRID_SHAPE and semantics.dtype == torch.uint8

    info = dataset.data_infos[1]
    stored = np.load(Path(info["occ_path"]) / "labels.npz")["semantics"]
    flips = [stored, stored[::-1], stored[:, ::-1], stored[::-1, ::-1]]  # bda may flip x and/or y
    assert any(np.array_equal(semantics.numpy(), f) for f in flips)

    # gt_depth comes from the LiDAR through lidar2ego, ego2global and each camera's sensor2ego: taken back
    # into the ego frame through the camera alone, the depths must land on occupied voxels.
    depth = item["gt_depth"].data if hasattr(item["gt_depth"], "data") else item["gt_depth"]
    assert depth.shape == (6, 256, 704)
    hits = []
    for cam in range(6):
        v, u = torch.nonzero(depth[cam] > 0, as_tuple=True)
        d = depth[cam, v, u].double()
        aug = torch.stack([u.double(), v.double(), torch.ones_like(d)], dim=1)
        pixel = (aug - post_trans[cam].double()) @ torch.linalg.inv(post_rots[cam].double()).T
        pixel[:, 2] = 1
        cam_points = (pixel @ torch.linalg.inv(intrins[cam].double()).T) * d[:, None]
        ego = cam_points @ sensor2egos[cam, :3, :3].double().T + sensor2egos[cam, :3, 3].double()
        cells = torch.floor((ego - torch.tensor([-40.0, -40.0, -1.0], dtype=torch.float64)) / 0.4).long()
        inside = ((cells >= 0) & (cells < torch.tensor(GRID_SHAPE))).all(dim=1)
        cells = cells[inside].numpy()
        occupied = np.zeros(len(cells), dtype=bool)
        for shift in [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]:
            near = np.clip(cells + shift, 0, np.array(GRID_SHAPE) - 1)
            occupied |= stored[near[:, 0], near[:, 1], near[:, 2]] != FREE
        hits.append(occupied)
    hits = np.concatenate(hits)
    assert len(hits) > 5_000 and hits.mean() > 0.97


def test_marker_content_names_the_parameters(small_set):
    base, _ = small_set
    marker = target.read_marker(base / PREFIX)
    assert marker["seed"] == SMALL.seed and marker["parameters"] == SMALL.parameters()
    assert marker["paths_start_with"] == PREFIX
