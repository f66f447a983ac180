"""flashocc-r50 built from the patched config, trained one step on CPU at FlashOCC shapes."""

from __future__ import annotations

import importlib.util
import time

import pytest

torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")


def load_parity_tool(flashocc_root):
    """The parity command's nuScenes-like rig, so both use the same camera geometry."""
    spec = importlib.util.spec_from_file_location("bev_pool_parity", flashocc_root / "tools" / "bev_pool_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_and_inputs(flashocc_root):
    from mmcv import Config
    from mmdet3d.models import build_model

    cfg = Config.fromfile(str(flashocc_root / "projects/configs/flashocc/flashocc-r50.py"))
    cfg.model.img_backbone.pretrained = None  # no download
    torch.manual_seed(0)
    model = build_model(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    model.init_weights()
    model.train()

    g = torch.Generator().manual_seed(0)
    rig = load_parity_tool(flashocc_root).rig(1, g)
    ego2global = torch.eye(4).repeat(1, 6, 1, 1)
    ego2global[..., :3, 3] = torch.tensor([1234.5, -876.25, 3.0])  # global translation, as in nuScenes
    imgs = torch.randn(1, 6, 3, 256, 704, generator=g)
    img_inputs = [imgs, rig[0], ego2global, *rig[2:]]
    voxel_semantics = torch.randint(0, 18, (1, 200, 200, 16), generator=g)
    mask_camera = (torch.rand(1, 200, 200, 16, generator=g) > 0.3).to(torch.uint8)
    return model, img_inputs, voxel_semantics, mask_camera


def test_r50_forward_backward_on_cpu(model_and_inputs):
    model, img_inputs, voxel_semantics, mask_camera = model_and_inputs
    model.zero_grad()
    start = time.perf_counter()
    losses = model.forward_train(img_inputs=img_inputs, img_metas=[{}], voxel_semantics=voxel_semantics,
                                 mask_camera=mask_camera)
    loss = sum(v for v in losses.values())
    loss.backward()
    elapsed = time.perf_counter() - start
    print(f"\nflashocc-r50 forward+backward, 1 sample x 6 cameras at 256x704, CPU: {elapsed:.1f} s")
    assert set(losses) == {"loss_occ"}
    assert torch.isfinite(loss) and loss.item() > 0
    backbone_grad = model.img_backbone.conv1.weight.grad
    assert backbone_grad is not None and backbone_grad.abs().sum() > 0, "no gradient reached the backbone"
    depth_rows = model.img_view_transformer.depth_net.weight.grad[: model.img_view_transformer.D]
    assert depth_rows.abs().sum() > 0, "no gradient reached the depth bins through bev_pool_v3"


def test_bev_features_equal_the_sort_and_interval_reference(model_and_inputs, monkeypatch):
    from projects.mmdet3d_plugin.models.necks import view_transformer
    from projects.mmdet3d_plugin.ops.bev_pool_v3 import bev_pool_v3_sorted

    model, img_inputs, _, _ = model_and_inputs
    with torch.no_grad():
        inputs = model.prepare_inputs(img_inputs)
        feats, _ = model.image_encoder(inputs[0])
        portable, _ = model.img_view_transformer([feats] + inputs[1:7])
        monkeypatch.setattr(view_transformer, "bev_pool_v3", bev_pool_v3_sorted)
        reference, _ = model.img_view_transformer([feats] + inputs[1:7])
    assert portable.shape == (1, 64, 200, 200)
    assert portable.abs().sum() > 0
    torch.testing.assert_close(portable, reference, rtol=1e-5, atol=1e-5)


def test_prepare_step_matches_upstreams_rank_computation(flashocc_root):
    """The sort-free prepare step keeps exactly upstream's points, ranks and truncation."""
    from projects.mmdet3d_plugin.models.necks.view_transformer import LSSViewTransformer

    grid = {"x": [-40, 40, 0.4], "y": [-40, 40, 0.4], "z": [-1, 5.4, 6.4], "depth": [1.0, 45.0, 0.5]}
    vt = LSSViewTransformer(grid_config=grid, input_size=(256, 704), downsample=16, in_channels=8, out_channels=8)
    g = torch.Generator().manual_seed(1)
    coor = (torch.rand(2, 3, 5, 4, 6, 3, generator=g) - 0.5) * torch.tensor([90.0, 90.0, 9.0])
    coor[0, 0, 0, 0, 0] = torch.tensor([-40.2, -40.3, -1.1])  # just below the bounds: truncation -> cell 0
    ranks_bev, ranks_depth, ranks_feat = vt.voxel_pooling_prepare_v2(coor)

    # upstream, written out: float ranks, boolean indexing
    flat = ((coor - vt.grid_lower_bound) / vt.grid_interval).long().view(-1, 3)
    batch = torch.arange(2).repeat_interleave(flat.shape[0] // 2)
    kept = ((flat >= 0) & (flat < vt.grid_size.long())).all(1)
    expected_bev = (batch * 40000 + flat[:, 2] * 40000 + flat[:, 1] * 200 + flat[:, 0])[kept]
    expected_depth = torch.arange(flat.shape[0])[kept]
    expected_feat = torch.arange(flat.shape[0] // 5).view(2, 3, 1, 4, 6).expand(2, 3, 5, 4, 6).flatten()[kept]
    assert ranks_bev.dtype == ranks_depth.dtype == ranks_feat.dtype == torch.int32
    assert ranks_bev.tolist() == expected_bev.tolist()
    assert ranks_depth.tolist() == expected_depth.tolist()
    assert ranks_feat.tolist() == expected_feat.tolist()
    assert 0 in ranks_depth.tolist()  # the point just below the bounds is kept, in cell 0
