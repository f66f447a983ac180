"""The port's faster data pipeline gives upstream's model inputs bit for bit.

Upstream's pristine pipeline (the pinned commit's loading.py/formating.py and config, loaded under
private names by flashocc_kit.bench.upstream) and the patched one run on the same synthetic samples at
nuScenes resolution with the same seeds, augmentations on (train mode).
"""

from __future__ import annotations

import copy

import pytest

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

np = pytest.importorskip("numpy", reason="needs numpy: run the suite in the kit's environment")
torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")

TRAIN_CONFIG = "projects/configs/flashocc/flashocc-r50.py"
DEPTH_CONFIG = "projects/configs/panoptic-flashocc/panoptic-flashocc-r50-depth.py"
STEREO_CONFIG = "projects/configs/flashocc/flashocc-r50-4d-stereo.py"  # sequential: 2 adjacent frames
MODEL_INPUTS = ("img_inputs", "voxel_semantics", "mask_lidar", "mask_camera")
SEEDS = (0, 17, 4242)


@pytest.fixture(scope="module")
def pipelines(flashocc_root):
    """Inputs, upstream's steps and the patched steps for the train and the depth config."""
    from flashocc_kit.bench import pipeline, upstream
    from flashocc_kit.bench.common import worker_threads
    from flashocc_kit.bench.data import synthetic_set
    from flashocc_kit.errors import KitError
    from flashocc_kit.pins import default_sources_dir

    try:
        upstream.pristine_text(flashocc_root, upstream.PIPELINE_FILES["loading"], default_sources_dir())
    except KitError as exc:
        pytest.skip(f"upstream's pristine pipeline is not available: {exc}")
    worker_threads(1)
    root = synthetic_set(1600, 900, 2)
    out = {}
    for name, config in (("train", TRAIN_CONFIG), ("depth", DEPTH_CONFIG), ("stereo", STEREO_CONFIG)):
        _, dataset = pipeline.train_dataset(flashocc_root, config, root)
        out[name] = (pipeline.pipeline_inputs(dataset, 2),
                     upstream.train_steps(flashocc_root, config, default_sources_dir()),
                     list(dataset.pipeline.transforms))
    return out


def run(steps, info, seed):
    np.random.seed(seed)
    results = copy.deepcopy(info)
    for step in steps:
        results = step(results)
    return results


def assert_identical(a: dict, b: dict, keys) -> None:
    from flashocc_kit.bench.pipeline import identical

    for key in keys:
        assert identical(a[key], b[key]), f"{key} differs from upstream's"


def test_train_pipeline_gives_upstreams_model_inputs(pipelines):
    infos, upstream_steps, patched_steps = pipelines["train"]
    names = [type(s).__name__ for s in patched_steps]
    assert "PointToMultiViewDepth" not in names and "LoadPointsFromFile" not in names
    assert "PointToMultiViewDepth" in [type(s).__name__ for s in upstream_steps]
    flipped = []
    for info in infos:
        for seed in SEEDS:
            ours, theirs = run(patched_steps, info, seed), run(upstream_steps, info, seed)
            assert_identical(ours, theirs, MODEL_INPUTS)
            assert ours["img_metas"].data == theirs["img_metas"].data
            assert "gt_depth" in theirs and "gt_depth" not in ours
            imgs, post_rots = ours["img_inputs"][0], ours["img_inputs"][4]
            assert imgs.shape == (6, 3, 256, 704) and imgs.dtype == torch.float32 and imgs.abs().sum() > 0
            flipped += (torch.linalg.det(post_rots[:, :2, :2]) < 0).tolist()  # a mirror has det < 0
    assert any(flipped) and not all(flipped), "the augmentations (flip at least) should vary across runs"


@pytest.mark.parametrize("name, views", [("depth", 6), ("stereo", 18)])
def test_depth_supervised_pipelines_give_upstreams_gt_depth(pipelines, name, views):
    infos, upstream_steps, patched_steps = pipelines[name]
    depth_steps = [s for s in patched_steps if type(s).__name__ == "PointToMultiViewDepth"]
    assert depth_steps
    for step in depth_steps:
        step.fast = True  # the fast path itself against upstream, whatever this platform's self-check said
    for info in infos:
        for seed in SEEDS:
            ours, theirs = run(patched_steps, info, seed), run(upstream_steps, info, seed)
            assert_identical(ours, theirs, (*MODEL_INPUTS, "gt_depth"))
            assert ours["img_inputs"][0].shape == (views, 3, 256, 704)
            depth = ours["gt_depth"].data if hasattr(ours["gt_depth"], "data") else ours["gt_depth"]
            assert depth.shape == (6, 256, 704)
            assert int((depth > 0).sum()) > 1000, "too few LiDAR depths to make the comparison mean anything"


def test_test_mode_image_inputs_and_canvas_match_upstreams_code(pipelines):
    """Outside training (no augmentation, rotation 0) the fast path keeps upstream's canvas too."""
    from projects.mmdet3d_plugin.datasets.pipelines.loading import PrepareImageInputs

    infos, _, patched_steps = pipelines["train"]
    config = patched_steps[0].data_config
    fast, slow = PrepareImageInputs(config), PrepareImageInputs(config, fast=False)
    ours, theirs = fast(copy.deepcopy(infos[0])), slow(copy.deepcopy(infos[0]))
    assert_identical(ours, theirs, ("img_inputs",))
    assert len(ours["canvas"]) == 6 and all(np.array_equal(a, b) for a, b in zip(ours["canvas"], theirs["canvas"]))


def test_fallback_paths_are_upstreams_too(pipelines):
    """fast=False (upstream's code in the patched classes) gives the same as the fast path."""
    from projects.mmdet3d_plugin.datasets.pipelines.loading import PointToMultiViewDepth, PrepareImageInputs

    infos, upstream_steps, patched_steps = pipelines["depth"]
    slow = []
    for step in patched_steps:
        if isinstance(step, PrepareImageInputs):
            step = PrepareImageInputs(step.data_config, is_train=step.is_train, sequential=step.sequential, fast=False)
        elif isinstance(step, PointToMultiViewDepth):
            step = PointToMultiViewDepth(step.grid_config, downsample=step.downsample, fast=False)
        slow.append(step)
    assert_identical(run(slow, infos[0], 5), run(upstream_steps, infos[0], 5), (*MODEL_INPUTS, "gt_depth"))


def test_resize_crop_flip_rotate_equal_pil_over_training_geometries(flashocc_root):
    """Every resize size flashocc-r50's augmentation can draw from a 1600x900 image, with crops that
    stick out of the resized image, flips and rotations, on noise (no smooth image to hide errors)."""
    from PIL import Image

    from projects.mmdet3d_plugin.datasets.pipelines import fast_image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8))
    widths = sorted({int(1600 * (704 / 1600 + r)) for r in np.linspace(-0.06, 0.11, 400)})
    for i, new_w in enumerate(widths[::7] + [widths[-1]]):
        new_h = int(900 * new_w / 1600)
        x0 = int(rng.integers(-40, max(1, new_w - 704) + 40))
        y0 = new_h - 256 if i % 3 else int(rng.integers(-30, new_h - 200))
        crop = (x0, y0, x0 + 704, y0 + 256)
        flip, angle = bool(i % 2), float(rng.uniform(-5.4, 5.4))
        expected = img.resize((new_w, new_h)).crop(crop)
        if flip:
            expected = expected.transpose(method=Image.FLIP_LEFT_RIGHT)
        expected = np.asarray(expected.rotate(angle))
        got = fast_image.flip_rotate(fast_image.resize_crop(img, (new_w, new_h), crop), flip, angle)
        assert np.array_equal(got, expected), f"size {new_w}x{new_h}, crop {crop}, flip {flip}, angle {angle}"


def test_normalisation_table_equals_imnormalize(flashocc_root):
    from mmcv.image.photometric import imnormalize

    from projects.mmdet3d_plugin.datasets.pipelines import fast_image
    from projects.mmdet3d_plugin.datasets.pipelines.loading import MMLAB_MEAN, MMLAB_STD

    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (256, 704, 3), dtype=np.uint8) for _ in range(3)]
    expected = torch.stack([torch.tensor(imnormalize(i, np.array(MMLAB_MEAN, np.float32),
                                                     np.array(MMLAB_STD, np.float32), True)).permute(2, 0, 1)
                            for i in imgs])
    got = fast_image.normalize_stack(imgs, MMLAB_MEAN, MMLAB_STD)
    assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_torch_cpu_argsort_is_not_stable():
    """Why the port re-runs upstream's argsort on the same keys instead of a stable sort: with ties,
    torch's default CPU argsort orders equal keys differently from a stable sort."""
    g = torch.Generator().manual_seed(0)
    keys = (torch.randint(0, 300, (5000,), generator=g) * 1000).float() + 0.25
    assert not torch.equal(keys.argsort(), torch.sort(keys, stable=True).indices)


def test_nearest_depth_with_float32_ties_matches_upstream(flashocc_root):
    """Crowded pixels at high ranks, where keys `rank + depth / 100.` collide in float32 (so the sort's
    tie order decides which depth wins) and where they do not: upstream's points2depthmap, pristine."""
    from flashocc_kit.bench import upstream
    from flashocc_kit.errors import KitError
    from flashocc_kit.pins import default_sources_dir
    from projects.mmdet3d_plugin.datasets.pipelines import fast_depth

    try:
        loading = upstream.pipeline_modules(flashocc_root, default_sources_dir())[0]
    except KitError as exc:
        pytest.skip(f"upstream's pristine pipeline is not available: {exc}")
    reference = loading.PointToMultiViewDepth(grid_config={"depth": [1.0, 45.0, 0.5]})
    g = torch.Generator().manual_seed(0)
    ambiguous = 0
    for trial in range(60):
        n = int(torch.randint(5, 5000, (1,), generator=g))
        u = torch.randint(0, 30, (n,), generator=g).float() + (600 if trial % 3 else 0)
        v = torch.randint(0, 56, (n,), generator=g).float() + (200 if trial % 3 else 0)
        d = torch.rand(n, generator=g) * 44 + 1
        if trial % 2:
            d = (d * 4).round() / 4  # equal depths as well
        points = torch.stack([u, v, d], 1)
        expected = reference.points2depthmap(points, 256, 704)
        rows = points[(d >= 1.0) & (d < 45.0)].numpy()  # what the projection pass keeps (kept1)
        ranks, keys = fast_depth._keys(rows, np.float32(704))
        scratch = np.empty(256 * 704, np.float32), np.empty(256 * 704, np.float32)
        ambiguous += not fast_depth._nearest_if_unambiguous(rows, keys, *scratch, np.zeros((256, 704), np.float32))
        got = fast_depth.nearest_depth_maps([rows], 256, 704, (1.0, 45.0))[0]
        assert torch.equal(got, expected), f"trial {trial}"
    assert 10 < ambiguous < 60, "the cases should exercise both the sort-free and the argsort path"


def test_depth_maps_of_projected_points_are_upstreams(flashocc_root):
    """fast_depth.depth_maps against upstream's pristine points2depthmap on projected points: out of the image,
    on half pixels (round half to even), at the depth range's edges, on shared pixels."""
    from flashocc_kit.bench import upstream
    from flashocc_kit.errors import KitError
    from flashocc_kit.pins import default_sources_dir
    from projects.mmdet3d_plugin.datasets.pipelines import fast_depth

    try:
        loading = upstream.pipeline_modules(flashocc_root, default_sources_dir())[0]
    except KitError as exc:
        pytest.skip(f"upstream's pristine pipeline is not available: {exc}")
    g = torch.Generator().manual_seed(1)
    for downsample, (height, width) in ((1, (256, 704)), (16, (256, 704))):
        reference = loading.PointToMultiViewDepth(grid_config={"depth": [1.0, 45.0, 0.5]}, downsample=downsample)
        n = 30000
        u = (torch.rand(n, generator=g) * 760 - 30).div(0.25 * downsample).round().mul(0.25 * downsample)
        v = (torch.rand(n, generator=g) * 300 - 20).div(0.25 * downsample).round().mul(0.25 * downsample)
        d = torch.rand(n, generator=g) * 47
        d[::4] = (d[::4] * 2).round() / 2  # 1.0 and 45.0 exactly among them
        points = torch.stack([u, v, d], 1).view(3, n // 3, 3)
        got = fast_depth.depth_maps(points.numpy(), downsample, height // downsample, width // downsample,
                                    (1.0, 45.0))
        for c in range(3):
            expected = reference.points2depthmap(points[c], height, width)
            assert torch.equal(got[c], expected), f"camera {c}, downsample {downsample}"
            assert int((expected > 0).sum()) > 100


def test_a_platform_that_computes_differently_gets_the_reference_path_and_a_warning(flashocc_root, monkeypatch):
    """The self-checks are live: break each compiled kernel and the public functions warn and fall back."""
    from PIL import Image

    from projects.mmdet3d_plugin.datasets.pipelines import fast_depth, fast_image, loading
    from projects.mmdet3d_plugin.datasets.pipelines.loading import MMLAB_MEAN, MMLAB_STD, PointToMultiViewDepth

    def broken(*args):
        """A kernel computing something else (zeros), as on a platform with other rounding."""
        if isinstance(args[-1], np.ndarray):
            args[-1][...] = 0  # the kernels that write into an `out` argument
        return np.zeros((1, 1, 3), np.uint8)  # _resize_crop returns its result

    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8))
    arr = rng.integers(0, 256, (37, 101, 3), dtype=np.uint8)
    imgs = [rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)]
    monkeypatch.setattr(fast_image, "_resize_crop", broken)
    monkeypatch.setattr(fast_image, "_flip_rotate", broken)
    monkeypatch.setattr(fast_image, "_lut_chw", broken)
    monkeypatch.setattr(fast_image, "_lut_checked", {})
    monkeypatch.setattr(fast_depth, "depth_maps", lambda *a: torch.zeros((2, 256, 704)))
    loading._depth_fast_path_agrees.cache_clear()
    fast_image._resize_verified.cache_clear()
    fast_image._rotate_verified.cache_clear()
    try:
        with pytest.warns(UserWarning, match="differs from PIL"):
            got = fast_image.resize_crop(img, (75, 42), (3, 10, 73, 36))
        assert np.array_equal(got, np.asarray(img.resize((75, 42)).crop((3, 10, 73, 36))))
        with pytest.warns(UserWarning, match="differs from PIL"):
            got = fast_image.flip_rotate(arr, True, 5.4)
        assert np.array_equal(got, np.asarray(Image.fromarray(arr).transpose(Image.FLIP_LEFT_RIGHT).rotate(5.4)))
        with pytest.warns(UserWarning, match="differs from imnormalize"):
            got = fast_image.normalize_stack(imgs, MMLAB_MEAN, MMLAB_STD)
        assert torch.equal(got[0], fast_image._reference_normalize(imgs[0], MMLAB_MEAN, MMLAB_STD))
        with pytest.warns(UserWarning, match="uses upstream's code") as warned:
            steps = [PointToMultiViewDepth(grid_config={"depth": [1.0, 45.0, 0.5]}) for _ in range(3)]
        assert [s.fast for s in steps] == [False] * 3 and len(warned) == 1  # checked and said once per process
    finally:  # the next test in this process must see the real kernels verified again
        loading._depth_fast_path_agrees.cache_clear()
        fast_image._resize_verified.cache_clear()
        fast_image._rotate_verified.cache_clear()
