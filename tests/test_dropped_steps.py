"""Dropping LoadPointsFromFile and PointToMultiViewDepth from configs whose model never reads LiDAR
points or gt_depth in training changes nothing the model computes.

Answered for flashocc-r50's own pipeline: upstream's train pipeline (with the two steps and 'gt_depth'
collected) and the port's (without) feed the same samples, same seeds, to one model, which must give
the same loss and gradients to the bit. The model is flashocc-r50's architecture at reduced width (the
smoke config's) with flashocc-r50's input size and grid, so the step stays fast on a CPU. Then every
config in projects/configs is checked: steps dropped exactly where the detector's forward_train does
not read gt_depth.
"""

from __future__ import annotations

import copy

import pytest

np = pytest.importorskip("numpy", reason="needs numpy: run the suite in the kit's environment")
torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")

R50 = "projects/configs/flashocc/flashocc-r50.py"
DROPPED = ("LoadPointsFromFile", "PointToMultiViewDepth")


def batch(steps, infos, seeds):
    """Samples through `steps`, collated and scattered as MMDataParallel does on the CPU."""
    from mmcv.parallel import collate, scatter_kwargs

    samples = []
    for info, seed in zip(infos, seeds):
        np.random.seed(seed)
        results = copy.deepcopy(info)
        for step in steps:
            results = step(results)
        samples.append(results)
    _, kwargs = scatter_kwargs((), collate(samples, samples_per_gpu=len(samples)), [-1])
    return kwargs[0]


@pytest.fixture(scope="module")
def r50_batches(flashocc_root):
    """(with the dropped steps, without them): flashocc-r50's upstream and patched train pipelines."""
    from flashocc_kit.bench import pipeline, upstream
    from flashocc_kit.bench.data import synthetic_set
    from flashocc_kit.errors import KitError
    from flashocc_kit.pins import default_sources_dir

    try:
        upstream_cfgs = upstream.config_namespace(flashocc_root, R50, default_sources_dir())["train_pipeline"]
    except KitError as exc:
        pytest.skip(f"upstream's flashocc-r50 config is not available: {exc}")
    cfg, dataset = pipeline.train_dataset(flashocc_root, R50, synthetic_set(1600, 900, 2))
    infos = pipeline.pipeline_inputs(dataset, 2)
    with_steps = pipeline.patched_steps(upstream_cfgs)  # upstream's list, the port's classes
    assert [type(s).__name__ for s in with_steps if type(s).__name__ in DROPPED] == list(DROPPED)
    without = list(dataset.pipeline.transforms)
    assert not [s for s in without if type(s).__name__ in DROPPED]
    seeds = (3, 11)
    return cfg, batch(with_steps, infos, seeds), batch(without, infos, seeds)


def small_r50(flashocc_root, cfg):
    """flashocc-r50's own detector, view transformer, heads and grid, at small widths (fast on CPU)."""
    from mmdet3d.models import build_model

    model_cfg = copy.deepcopy(cfg.model)
    assert model_cfg.type == "BEVDetOCC" and model_cfg.img_view_transformer.type == "LSSViewTransformer"
    model_cfg.img_backbone.update(depth=18, base_channels=32, with_cp=False, pretrained=None)
    model_cfg.img_neck.update(in_channels=[128, 256], out_channels=64)
    model_cfg.img_view_transformer.update(in_channels=64, out_channels=16)
    model_cfg.img_bev_encoder_backbone.update(numC_input=16, num_channels=[32, 64, 128])
    model_cfg.img_bev_encoder_neck.update(in_channels=128 + 32, out_channels=32)
    model_cfg.occ_head.update(in_dim=32, out_dim=32)
    torch.manual_seed(0)
    model = build_model(model_cfg)
    model.init_weights()
    return model.train()


def step(model, state, data):
    model.load_state_dict(state)
    model.zero_grad()
    losses = model(return_loss=True, **data)
    loss = sum(losses.values())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_r50_loss_and_gradients_are_bit_identical_without_the_dropped_steps(flashocc_root, r50_batches):
    cfg, with_steps, without = r50_batches
    assert "gt_depth" in with_steps and with_steps["gt_depth"].abs().sum() > 0, "upstream's batch carries depth"
    assert "gt_depth" not in without and "points" not in without
    for key in ("voxel_semantics", "mask_lidar", "mask_camera"):
        assert torch.equal(with_steps[key], without[key])
    for a, b in zip(with_steps["img_inputs"], without["img_inputs"]):
        assert torch.equal(a, b)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order for both runs
    try:
        model = small_r50(flashocc_root, cfg)
        state = copy.deepcopy(model.state_dict())
        loss_with, grads_with = step(model, state, with_steps)
        loss_without, grads_without = step(model, state, without)
    finally:
        torch.set_num_threads(threads)
    assert torch.isfinite(loss_with) and loss_with > 0
    assert torch.equal(loss_with, loss_without), f"{loss_with.item()!r} != {loss_without.item()!r}"
    assert grads_with.keys() == grads_without.keys() and len(grads_with) > 10
    for name, grad in grads_with.items():
        assert torch.equal(grad, grads_without[name]), f"gradient of {name} differs"


def detector_reads_gt_depth(model_type: str) -> bool:
    """Whether the forward_train the detector inherits uses the name 'gt_depth' (kwargs['gt_depth'],
    a keyword argument, ...): the string is then one of the code object's constants or names."""
    from mmdet3d.models.builder import DETECTORS

    cls = DETECTORS.get(model_type)
    assert cls is not None, f"unknown detector {model_type}"
    code = cls.forward_train.__code__
    return "gt_depth" in code.co_consts or "gt_depth" in code.co_varnames or "gt_depth" in code.co_names


def test_configs_drop_the_steps_exactly_where_the_model_reads_no_depth(flashocc_root):
    from mmcv import Config


    checked, dropped, kept, unloadable = 0, [], [], []
    for path in sorted((flashocc_root / "projects" / "configs").rglob("*.py")):
        rel = str(path.relative_to(flashocc_root))
        try:
            cfg = Config.fromfile(str(path))
        except Exception:  # upstream ships configs whose _base_ does not exist
            unloadable.append(rel)
            continue
        train = cfg.data.train
        while "dataset" in train:
            train = train.dataset
        names = [s["type"] for s in train.pipeline]
        keys = next(s["keys"] for s in train.pipeline if s["type"] == "Collect3D")
        assert "points" not in keys, f"{rel}: collects LiDAR points for training"
        if detector_reads_gt_depth(cfg.model.type):
            assert "PointToMultiViewDepth" in names and "gt_depth" in keys, f"{rel}: its model needs gt_depth"
            kept.append(rel)
        else:
            assert not set(DROPPED) & set(names), f"{rel}: {cfg.model.type} reads no gt_depth, yet the steps remain"
            assert "gt_depth" not in keys, f"{rel}: collects gt_depth its model never reads"
            dropped.append(rel)
        checked += 1
    print(f"\nsteps dropped: {dropped}\ndepth-supervised, kept: {len(kept)} configs\nnot loadable upstream: "
          f"{unloadable}")
    assert {R50, "projects/configs/flashocc/flashocc-r50-M0.py",
            "projects/configs/bevdet_occ/bevdet-occ-r50.py"} <= set(dropped)
    assert "projects/configs/panoptic-flashocc/panoptic-flashocc-r50-depth.py" in kept
    assert checked >= 20
