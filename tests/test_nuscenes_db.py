"""`kit.py synth`'s nuScenes tables: the real nuscenes-devkit loads a generated set, its boxes lie where the
generator put its objects, its velocities are theirs, and upstream's converter (create_nuscenes_infos, then
add_ann_adj_info) makes from it the infos the generator writes itself."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import pickle
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import KIT_ROOT
from flashocc_kit.errors import KitError
from flashocc_kit.occ3d import CAMERAS, DET_CLASSES, LIDAR, OCC, VOXEL
from flashocc_kit.synth import options
from flashocc_kit.synth import splits as kit_splits

np = pytest.importorskip("numpy", reason="the generator needs numpy: run with the kit's environment")
pytest.importorskip("cv2", reason="the generator needs OpenCV: run with the kit's environment")
pytest.importorskip("nuscenes", reason="needs the nuscenes-devkit: run with the kit's environment")

from nuscenes.eval.detection.utils import category_to_detection_name, detection_name_to_rel_attributes  # noqa: E402
from nuscenes.nuscenes import NuScenes  # noqa: E402
from nuscenes.utils import splits  # noqa: E402
from nuscenes.utils.geometry_utils import view_points  # noqa: E402

from flashocc_kit.synth import nuscenes_db  # noqa: E402
from flashocc_kit.synth.generate import generate, make_scene  # noqa: E402
from flashocc_kit.synth.geometry import wrap_angle, yaw_matrix  # noqa: E402
from flashocc_kit.synth.options import SynthOptions  # noqa: E402
from flashocc_kit.synth.raycast import HIT, OccupancyGrid  # noqa: E402
from flashocc_kit.synth.scene import voxelise  # noqa: E402
from flashocc_kit.synth.validate import Problems, RawTables, load_tables, validate  # noqa: E402
from flashocc_kit.synth.writer import token  # noqa: E402

OPTS = SynthOptions(width=192, height=108, train_scenes=2, val_scenes=1, samples_per_scene=3, seed=11, workers=1)
MINI = replace(OPTS, train_scenes=1, samples_per_scene=2, seed=12, version="v1.0-mini")
FLASHOCC = KIT_ROOT / "FlashOCC"


def make(base: Path, opts: SynthOptions) -> Path:
    """A set at base/nuscenes whose infos name it by its absolute path (the converter's paths then match)."""
    root = base / "nuscenes"
    generate(opts, root, str(root), progress=False)
    return root


def load_infos(root: Path, split: str, prefix: str = "bevdetv2-nuscenes") -> dict:
    return pickle.loads((root / f"{prefix}_infos_{split}.pkl").read_bytes())


def all_infos(root: Path) -> list[dict]:
    return load_infos(root, "train")["infos"] + load_infos(root, "val")["infos"]


def key_frames(opts: SynthOptions) -> dict[str, tuple[int, int]]:
    """Sample token -> (scene index, key frame), as the generator names them."""
    return {token(opts.seed, "sample", s, k): (s, k) for s in range(opts.train_scenes + opts.val_scenes)
            for k in range(opts.samples_per_scene)}


def corners(box: np.ndarray) -> np.ndarray:
    """(8, 3) corners of an ego-frame box (x, y, z, l, w, h, yaw, ...)."""
    x, y, z, length, width, height, yaw = box[:7]
    offsets = np.array([[a * length, b * width, c * height] for a in (-0.5, 0.5) for b in (-0.5, 0.5)
                        for c in (-0.5, 0.5)])
    return offsets @ yaw_matrix(yaw).T + (x, y, z)


@pytest.fixture(scope="module")
def trainval(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("trainval"), OPTS)


@pytest.fixture(scope="module")
def nusc(trainval) -> NuScenes:
    return NuScenes(OPTS.version, str(trainval), verbose=False)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("mini"), MINI)


def test_the_devkit_loads_every_sample_with_the_files_written(trainval, nusc):
    assert sorted(os.listdir(trainval / OPTS.version)) == sorted(f"{t}.json" for t in nuscenes_db.TABLES)
    infos = all_infos(trainval)
    assert len(nusc.sample) == len(infos) == 9 and len(nusc.scene) == 3
    for info in infos:
        sample = nusc.get("sample", info["token"])
        scene = nusc.get("scene", sample["scene_token"])
        assert (scene["token"], scene["name"], sample["timestamp"]) == (info["scene_token"], info["scene_name"],
                                                                        info["timestamp"])
        assert sorted(sample["data"]) == sorted([LIDAR, *CAMERAS])
        for channel, sd_token in sample["data"].items():
            record = nusc.get("sample_data", sd_token)
            assert record["is_key_frame"] and record["timestamp"] == info["timestamp"]
            stored = info["lidar_path"] if channel == LIDAR else info["cams"][channel]["data_path"]
            assert nusc.get_sample_data_path(sd_token) == stored and Path(stored).is_file()
            pose = nusc.get("ego_pose", record["ego_pose_token"])
            assert (pose["translation"], pose["rotation"]) == (info["ego2global_translation"],
                                                               info["ego2global_rotation"])
            if channel != LIDAR:
                assert (record["width"], record["height"]) == (OPTS.width, OPTS.height)
                assert sd_token == info["cams"][channel]["sample_data_token"]
        assert len(sample["anns"]) == len(info["gt_boxes"])
    # prev/next: samples and each sensor's sample_data chain through a scene in time order, and stop at its ends.
    for scene in nusc.scene:
        chain = [scene["first_sample_token"]]
        while nusc.get("sample", chain[-1])["next"]:
            chain.append(nusc.get("sample", chain[-1])["next"])
        assert chain[-1] == scene["last_sample_token"] and len(chain) == scene["nbr_samples"] == OPTS.samples_per_scene
        assert nusc.get("sample", chain[0])["prev"] == ""
        for channel in (LIDAR, *CAMERAS):
            record = nusc.get("sample_data", nusc.get("sample", chain[0])["data"][channel])
            walked = [record["sample_token"]]
            while record["next"]:
                record = nusc.get("sample_data", record["next"])
                walked.append(record["sample_token"])
            assert walked == chain
        log = nusc.get("log", scene["log_token"])
        assert nusc.get("map", log["map_token"])["mask"].mask().shape == (nuscenes_db.MAP_SIZE,) * 2


def test_scenes_take_the_official_split_names(trainval):
    train, val = load_infos(trainval, "train")["infos"], load_infos(trainval, "val")["infos"]
    assert sorted({i["scene_name"] for i in train}) == splits.train[:OPTS.train_scenes]
    assert sorted({i["scene_name"] for i in val}) == splits.val[:OPTS.val_scenes]
    for info in train + val:
        assert info["occ_path"] == os.path.join(str(trainval), "gts", info["scene_name"], info["token"])
        assert (Path(info["occ_path"]) / "labels.npz").is_file()
    assert sorted(p.name for p in (trainval / "gts").iterdir()) == sorted({i["scene_name"] for i in train + val})
    # The kit's copy of the splits (it may not import the devkit) is the devkit's.
    for version, by_split in kit_splits.DEVKIT_SPLIT.items():
        for split, attribute in by_split.items():
            assert list(kit_splits.scene_names(version, split)) == getattr(splits, attribute)


def test_camera_boxes_are_the_generated_objects_where_the_images_show_them(trainval, nusc):
    """get_sample_data's boxes, in the camera frame: the generator's boxes through its own rig, picked by the
    devkit's visibility rule, with the right class, and covering the pixels the generator rendered as objects."""
    frames = key_frames(OPTS)
    covered = seen = 0
    for info in load_infos(trainval, "train")["infos"][:2] + load_infos(trainval, "val")["infos"][:1]:
        s, k = frames[info["token"]]
        scene = make_scene(OPTS, s)
        frame = voxelise(scene.world, k)
        grid = OccupancyGrid(frame.semantics)
        sample = nusc.get("sample", info["token"])
        for camera in scene.cameras:
            path, boxes, intrinsic = nusc.get_sample_data(sample["data"][camera.name])
            assert Path(path).is_file()
            np.testing.assert_allclose(intrinsic, camera.intrinsic, rtol=0, atol=1e-12)
            # The generator's own projection decides which boxes the camera sees (any corner in the image at
            # more than 1 m, every corner 0.1 m in front: box_in_image's rule) ...
            expected = set()
            for i, box in enumerate(frame.boxes):
                uv, depth = camera.project(corners(box))
                inside = (uv[:, 0] > 0) & (uv[:, 0] < camera.width) & (uv[:, 1] > 0) & (uv[:, 1] < camera.height)
                if (inside & (depth > 1)).any() and (depth > 0.1).all():
                    expected.add(i)
            found = {sample["anns"].index(box.token): box for box in boxes}
            assert set(found) == expected
            # ... and each box is the generated one, in the camera frame ...
            rays = camera.pixel_rays()
            hits = grid.cast(camera.translation, rays)
            hit = hits.kind == HIT
            pixel_class = np.where(hit, frame.semantics.ravel()[np.maximum(hits.voxel, 0)], -1)
            points = camera.translation + np.where(hit, hits.t, 0.0)[:, None] * rays
            pixel_v, pixel_u = np.divmod(np.arange(len(rays)), camera.width)  # pixel_rays is row-major
            for i, box in found.items():
                generated = frame.boxes[i]
                np.testing.assert_allclose(box.center, (generated[:3] - camera.translation) @ camera.rotation,
                                           rtol=0, atol=1e-6)
                np.testing.assert_allclose(box.wlh, generated[[4, 3, 5]], rtol=0, atol=1e-9)
                np.testing.assert_allclose(box.rotation_matrix, camera.rotation.T @ yaw_matrix(generated[6]),
                                           rtol=0, atol=1e-9)
                assert category_to_detection_name(box.name) == DET_CLASSES[frame.labels[i]]
                # ... where the image shows it: the pixels whose rays first hit its voxels (the generator's own
                # labels) lie inside the devkit box's outline in the image, the box grown by the voxelisation.
                local = (points - generated[:3]) @ yaw_matrix(generated[6])
                mine = (pixel_class == OCC[DET_CLASSES[frame.labels[i]]]) & (
                    np.abs(local) <= generated[[3, 4, 5]] / 2 + VOXEL).all(axis=1)
                grown = box.copy()
                grown.wlh = box.wlh + 2 * VOXEL
                if not mine.any() or (grown.corners()[2] <= 0.1).any():
                    continue
                uv = view_points(grown.corners(), intrinsic, normalize=True)[:2]
                inside = ((pixel_u[mine] >= uv[0].min()) & (pixel_u[mine] <= uv[0].max())
                          & (pixel_v[mine] >= uv[1].min()) & (pixel_v[mine] <= uv[1].max()))
                covered += int(inside.sum())
                seen += int(mine.sum())
    assert seen > 2000 and covered == seen, (covered, seen)


def test_annotations_carry_the_generated_motion_and_attributes(trainval, nusc):
    """box_velocity (differences of consecutive samples) is the velocity the generator moves the object at."""
    rows = {}  # instance token -> (scene, object row)
    for s in range(OPTS.train_scenes + OPTS.val_scenes):
        for row in range(len(make_scene(OPTS, s).world.boxes)):
            rows[token(OPTS.seed, "instance", s, row)] = (s, row)
    moving = singletons = 0
    for annotation in nusc.sample_annotation:
        instance = nusc.get("instance", annotation["instance_token"])
        s, row = rows[instance["token"]]
        scene = make_scene(OPTS, s)
        velocity_scene = scene.world.box_array()[row, 8:10]
        expected = yaw_matrix(scene.origin[2])[:2, :2] @ velocity_scene  # the scene frame in the global frame
        velocity = nusc.box_velocity(annotation["token"])
        if instance["nbr_annotations"] == 1:
            assert np.isnan(velocity).all()  # nuScenes cannot tell a single annotation's velocity
            singletons += 1
        else:
            np.testing.assert_allclose(velocity, [*expected, 0.0], rtol=1e-6, atol=1e-5)
            moving += np.hypot(*expected) > 0.5
        detection = category_to_detection_name(annotation["category_name"])
        names = [nusc.get("attribute", t)["name"] for t in annotation["attribute_tokens"]]
        assert set(names) <= set(detection_name_to_rel_attributes(detection))
        assert len(names) == (0 if detection in ("barrier", "traffic_cone") else 1)
        assert nusc.get("visibility", annotation["visibility_token"])["level"] in ("v0-40", "v80-100")
        assert annotation["num_radar_pts"] == 0
    assert moving > 5 and singletons < len(nusc.sample_annotation) / 4


def test_mini_uses_the_mini_splits_and_its_limits(mini):
    nusc = NuScenes(MINI.version, str(mini), verbose=False)
    assert [s["name"] for s in nusc.scene] == [splits.mini_train[0], splits.mini_val[0]]
    assert not (mini / "v1.0-trainval").exists()
    train, val = load_infos(mini, "train"), load_infos(mini, "val")
    assert train["metadata"] == val["metadata"] == {"version": "v1.0-mini"}
    assert {i["scene_name"] for i in train["infos"]} == {splits.mini_train[0]}
    assert {i["scene_name"] for i in val["infos"]} == {splits.mini_val[0]}

    for change, message in (({"train_scenes": 9}, "--train-scenes 9: v1.0-mini has 8 train scenes"),
                            ({"val_scenes": 3}, "--val-scenes 3: v1.0-mini has 2 val scenes"),
                            ({"version": "v1.0-trainval", "train_scenes": 701}, "--train-scenes 701: v1.0-trainval "
                                                                                "has 700 train scenes")):
        with pytest.raises(KitError, match=message):
            replace(MINI, **change).check()
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    args = parser.parse_args(["--version", "v1.0-mini", "--image-size", "192x108", "--val-scenes", "2"])
    assert options.options_from_args(args, 1).version == "v1.0-mini"
    with pytest.raises(KitError, match="v1.0-mini has 2 val scenes.*nuscenes.utils.splits.mini_val"):
        options.options_from_args(parser.parse_args(["--version", "v1.0-mini", "--val-scenes", "3"]), 1)


def test_same_seed_same_table_bytes(mini, tmp_path):
    again = make(tmp_path, replace(MINI, workers=2))
    for rel in [f"{MINI.version}/{t}.json" for t in nuscenes_db.TABLES] + [
            str(p.relative_to(mini)) for p in (mini / "maps").iterdir()]:
        data = (mini / rel).read_bytes()
        assert (again / rel).read_bytes() == data, rel
        if rel.endswith(".json"):
            assert nuscenes_db.table_bytes(json.loads(data)) == data  # sorted keys, floats as repr: stable


def test_validation_checks_the_tables_with_or_without_the_devkit(mini, tmp_path, monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(mini, root)
    prefix = str(mini)  # the copy's infos still name the original
    assert validate(root, prefix)["samples"] == {"train": 2, "val": 2}
    table_root = root / MINI.version

    def edit(table: str, change) -> None:
        records = json.loads((table_root / f"{table}.json").read_text())
        change(records)
        (table_root / f"{table}.json").write_text(json.dumps(records))

    edit("scene", lambda records: records[0].update(name="scene-0001"))  # trainval's, not mini_train's
    edit("sample_data", lambda records: records[3].update(filename="samples/CAM_FRONT/gone.jpg"))
    for hidden in (False, True):
        if hidden:  # no devkit: the plain JSON is indexed by the kit itself
            monkeypatch.setitem(sys.modules, "nuscenes.nuscenes", None)
            assert isinstance(load_tables(root, MINI.version, Problems()), RawTables)
        with pytest.raises(KitError) as err:
            validate(root, prefix)
        assert "the tables put it in scene scene-0001" in str(err.value)
        assert "names samples/CAM_FRONT/gone.jpg, which is missing" in str(err.value)
    (table_root / "visibility.json").unlink()
    with pytest.raises(KitError, match="visibility.json: does not load"):
        validate(root, prefix)


def upstream_converter(monkeypatch):
    if not (FLASHOCC / "tools" / "data_converter" / "nuscenes_converter.py").is_file():
        pytest.skip(f"no FlashOCC checkout at {FLASHOCC} (run `kit.py sources`)")
    try:
        import mmdet3d  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"mmdet3d does not import in {sys.executable}: {exc}")
    monkeypatch.syspath_prepend(str(FLASHOCC))
    from tools.data_converter import nuscenes_converter

    return nuscenes_converter


def compare_converted(generated: dict, converted: dict, multi: set[int]) -> None:
    """One sample's info from upstream's converter against the generator's (multi: boxes seen more than once)."""
    assert converted["lidar_path"] == generated["lidar_path"] and converted["sweeps"] == []
    for key in ("token", "timestamp", "lidar2ego_translation", "lidar2ego_rotation", "ego2global_translation",
                "ego2global_rotation"):
        assert converted[key] == generated[key], key
    assert list(converted["cams"]) == list(generated["cams"])
    for cam, ours in generated["cams"].items():
        theirs = converted["cams"][cam]
        for key in ("data_path", "type", "sample_data_token", "sensor2ego_translation", "sensor2ego_rotation",
                    "ego2global_translation", "ego2global_rotation", "timestamp"):
            assert theirs[key] == ours[key], (cam, key)
        np.testing.assert_array_equal(theirs["cam_intrinsic"], ours["cam_intrinsic"])
        for key in ("sensor2lidar_rotation", "sensor2lidar_translation"):  # to float32 precision
            np.testing.assert_allclose(theirs[key], ours[key], rtol=0, atol=1e-6, err_msg=f"{cam} {key}")
    np.testing.assert_allclose(converted["gt_boxes"][:, :6], generated["gt_boxes"][:, :6], rtol=0, atol=1e-6)
    assert np.abs(wrap_angle(converted["gt_boxes"][:, 6] - generated["gt_boxes"][:, 6])).max(initial=0) < 1e-7
    assert list(converted["gt_names"]) == list(generated["gt_names"])
    rows = sorted(multi)
    np.testing.assert_allclose(converted["gt_velocity"][rows], generated["gt_velocity"][rows], rtol=0, atol=1e-4)
    assert np.isnan(np.delete(converted["gt_velocity"], rows, axis=0)).all()  # box_velocity's NaN for singletons
    for key in ("num_lidar_pts", "num_radar_pts", "valid_flag"):
        np.testing.assert_array_equal(converted[key], generated[key], err_msg=key)


def seen_more_than_once(nusc: NuScenes, sample_token: str) -> set[int]:
    return {i for i, ann in enumerate(nusc.get("sample", sample_token)["anns"])
            if nusc.get("instance", nusc.get("sample_annotation", ann)["instance_token"])["nbr_annotations"] > 1}


@pytest.mark.parametrize("which", ["trainval", "mini"])
def test_upstream_converter_makes_the_generators_infos(which, request, monkeypatch, tmp_path):
    """mmdet3d's create_nuscenes_infos (as create_data_bevdet.py calls it, max_sweeps=0) on the tables: every
    sample, in the generator's split and order, with its paths, poses, boxes and counts."""
    converter = upstream_converter(monkeypatch)
    root, opts = request.getfixturevalue(which), {"trainval": OPTS, "mini": MINI}[which]
    monkeypatch.chdir(tmp_path)  # not above the data root: the converter shortens paths under the cwd
    converter.create_nuscenes_infos(str(root), "upstream", version=opts.version, max_sweeps=0)
    nusc = NuScenes(opts.version, str(root), verbose=False)
    for split in ("train", "val"):
        ours, theirs = load_infos(root, split), load_infos(root, split, "upstream")
        assert theirs["metadata"] == ours["metadata"] == {"version": opts.version}
        assert [i["token"] for i in theirs["infos"]] == [i["token"] for i in ours["infos"]]
        for generated, converted in zip(ours["infos"], theirs["infos"]):
            compare_converted(generated, converted, seen_more_than_once(nusc, generated["token"]))


@pytest.mark.parametrize("which", ["trainval", "mini"])
def test_upstream_add_ann_adj_info_gives_the_generators_annotations(which, request, monkeypatch, tmp_path):
    """create_data_bevdet.py's second step. Upstream's hard-codes ./data/nuscenes and v1.0-trainval: run from a
    directory whose data/nuscenes is the set; the kit's create-data-options.patch takes the root and version.
    Its ann_infos are the generator's, but for the velocity of objects annotated once, which nuScenes cannot
    tell (NaN, set to 0 there)."""
    converter = upstream_converter(monkeypatch)
    root, opts = request.getfixturevalue(which), {"trainval": OPTS, "mini": MINI}[which]
    spec = importlib.util.spec_from_file_location("create_data_bevdet", FLASHOCC / "tools" / "create_data_bevdet.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # as `python tools/create_data_bevdet.py` would, minus its __main__ part
    takes_version = "version" in inspect.signature(script.add_ann_adj_info).parameters
    if which == "mini" and not takes_version:
        pytest.skip("this create_data_bevdet.py hard-codes v1.0-trainval (create-data-options.patch not applied)")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "nuscenes").symlink_to(root)
    monkeypatch.chdir(tmp_path)
    converter.create_nuscenes_infos(str(root), "adj", version=opts.version, max_sweeps=0)
    if takes_version:
        script.add_ann_adj_info("adj", str(root), opts.version)
    else:
        script.add_ann_adj_info("adj")  # ./data/nuscenes, v1.0-trainval
    nusc = NuScenes(opts.version, str(root), verbose=False)
    for split in ("train", "val"):
        ours, theirs = load_infos(root, split)["infos"], load_infos(root, split, "adj")["infos"]
        assert [i["token"] for i in theirs] == [i["token"] for i in ours]
        for generated, converted in zip(ours, theirs):
            compare_adj_info(generated, converted, seen_more_than_once(nusc, generated["token"]))


def compare_adj_info(generated: dict, converted: dict, multi: set[int]) -> None:
    """What add_ann_adj_info adds to one sample's info (scene, occ_path, ann_infos) against the generator's
    (multi: the sample's boxes seen more than once, as indices into all its annotations)."""
    assert (converted["scene_token"], converted["scene_name"]) == (generated["scene_token"], generated["scene_name"])
    assert os.path.realpath(converted["occ_path"]) == os.path.realpath(generated["occ_path"])
    (their_boxes, their_labels), (our_boxes, our_labels) = converted["ann_infos"], generated["ann_infos"]
    assert their_labels == our_labels
    valid = np.flatnonzero(generated["valid_flag"])  # get_gt keeps the boxes with points
    kept = [n for n, i in enumerate(valid) if i in multi]
    their_boxes, our_boxes = np.array(their_boxes).reshape(-1, 9), np.array(our_boxes).reshape(-1, 9)
    np.testing.assert_allclose(their_boxes[:, :6], our_boxes[:, :6], rtol=0, atol=1e-6)
    assert np.abs(wrap_angle(their_boxes[:, 6] - our_boxes[:, 6])).max(initial=0) < 1e-7
    np.testing.assert_allclose(their_boxes[kept, 7:], our_boxes[kept, 7:], rtol=0, atol=1e-4)
    assert (np.delete(their_boxes[:, 7:], kept, axis=0) == 0).all()  # NaN velocities become 0 there
