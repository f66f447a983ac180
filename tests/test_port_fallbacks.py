"""The port's CPU fallbacks for upstream's CUDA-only pieces, its other small switches, and upstream's bev_pool ops on
npu tensors through DrivingSDK (on the kit's emulated NPU)."""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")


def nearest_assign_kernel(occ, l2s_key, occind2detind, inst_cls, inst_xyz, inst_ids):
    """Upstream's CUDA kernel, transcribed one voxel at a time (200 x 200 x 16 grid)."""
    out = torch.zeros_like(occ).flatten()
    flat = occ.flatten().tolist()
    keys = set(l2s_key.tolist())
    for idx, label in enumerate(flat):
        if label not in keys:
            out[idx] = label
            continue
        x, y, z = idx // (200 * 16), (idx - idx // (200 * 16) * 200 * 16) // 16, idx % 16
        best = 100000000
        for k in range(len(inst_cls)):
            if inst_cls[k] == occind2detind[label]:
                d = (x - inst_xyz[k][0]) ** 2 + (y - inst_xyz[k][1]) ** 2 + (z - inst_xyz[k][2]) ** 2
                if d < best:
                    best, out[idx] = d, int(inst_ids[k])
    return out.view(occ.shape)


def test_nearest_assign_portable_matches_the_cuda_kernel():
    portable = importlib.import_module(
        "flashocc.projects.mmdet3d_plugin.ops.nearest_assign.portable").nearest_assign_portable
    g = torch.Generator().manual_seed(0)
    occ = torch.full((200, 200, 16), 17, dtype=torch.int32)
    cells = torch.randint(0, occ.numel(), (400,), generator=g)
    occ.view(-1)[cells] = torch.randint(0, 11, (400,), generator=g, dtype=torch.int32)
    occind2detind = torch.tensor([-1, -1, 5, 3, 0, 4, 6, 7, -1, 2, 1])
    l2s_key = torch.tensor([2, 4, 10])  # class 10 has no instance below: its voxels become 0
    inst_cls = torch.tensor([5, 0, 0, 3])
    inst_xyz = torch.tensor([[10, 10, 2], [150, 20, 3], [150, 20, 3], [0, 0, 0]])  # a tie: first one wins
    inst_ids = torch.tensor([101, 102, 103, 104])
    got = portable(occ, l2s_key, occind2detind, inst_cls, inst_xyz, inst_ids, chunk=37)
    expected = nearest_assign_kernel(occ, l2s_key, occind2detind, inst_cls, inst_xyz, inst_ids)
    assert got.dtype == torch.int32
    assert torch.equal(got, expected)
    assert 103 not in got.tolist() and set(got[occ == 4].tolist()) == {102}


# --- in the patched FlashOCC tree ---------------------------------------------------------------

def test_bev_pool_v1_without_its_extension_sums_and_maxes_like_the_kernel(flashocc_root):
    from projects.mmdet3d_plugin.ops.bev_pool.bev_pool import bev_pool, bev_pool_ext

    assert bev_pool_ext is None  # not built on this machine
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(50, 8, generator=g, requires_grad=True)
    coords = torch.stack([torch.randint(0, 5, (50,), generator=g), torch.randint(0, 4, (50,), generator=g),
                          torch.randint(0, 2, (50,), generator=g), torch.randint(0, 2, (50,), generator=g)], 1)
    B, D, H, W = 2, 2, 4, 5  # coords: (x < W, y < H, z < D, b < B)
    expected_sum = torch.zeros(B, D, H, W, 8)
    expected_max = torch.zeros(B, D, H, W, 8)  # the kernel's running max starts at 0
    for f, (x, y, z, b) in zip(feats.detach(), coords.tolist()):
        expected_sum[b, z, y, x] += f
        expected_max[b, z, y, x] = torch.maximum(expected_max[b, z, y, x], f)
    summed = bev_pool(feats, coords, B, D, H, W)
    assert summed.shape == (B, 8, D, H, W)
    torch.testing.assert_close(summed, expected_sum.permute(0, 4, 1, 2, 3))
    summed.sum().backward()
    assert torch.allclose(feats.grad, torch.ones_like(feats))
    torch.testing.assert_close(bev_pool(feats, coords, B, D, H, W, "max"), expected_max.permute(0, 4, 1, 2, 3))


def test_bev_pool_v2_without_its_extension_matches_the_sorted_reference(flashocc_root):
    from projects.mmdet3d_plugin.ops.bev_pool_v2.bev_pool import bev_pool_v2
    from projects.mmdet3d_plugin.ops.bev_pool_v3.reference import bev_pool_v2_sorted, sort_into_intervals

    g = torch.Generator().manual_seed(2)
    depth = torch.rand(1, 2, 3, 4, 5, generator=g)
    feat = torch.randn(1, 2, 4, 5, 8, generator=g)
    n = 100
    ranks = (torch.randint(0, 40, (n,), generator=g).int(), torch.randint(0, depth.numel(), (n,), generator=g).int(),
             torch.randint(0, 40, (n,), generator=g).int())
    rb, rd, rf, starts, lengths = sort_into_intervals(*ranks)
    got = bev_pool_v2(depth, feat, rd, rf, rb, (1, 1, 5, 8, 8), starts, lengths)
    torch.testing.assert_close(got, bev_pool_v2_sorted(depth, feat, rd, rf, rb, (1, 1, 5, 8, 8), starts, lengths))


def test_tensorrt_export_path_still_gets_sorted_ranks_and_intervals(flashocc_root):
    from projects.mmdet3d_plugin.models.necks.view_transformer import LSSViewTransformer

    grid = {"x": [-40, 40, 0.4], "y": [-40, 40, 0.4], "z": [-1, 5.4, 6.4], "depth": [1.0, 45.0, 0.5]}
    vt = LSSViewTransformer(grid_config=grid, input_size=(256, 704), downsample=16, in_channels=8, out_channels=8)
    coor = (torch.rand(1, 2, 4, 3, 5, 3, generator=torch.Generator().manual_seed(3)) - 0.5) * 60
    rb, rd, rf, starts, lengths = vt.voxel_pooling_prepare_sorted(coor)
    assert (rb[1:] >= rb[:-1]).all()
    assert int(lengths.sum()) == rb.numel() and starts[0] == 0
    assert set(zip(*[t.tolist() for t in vt.voxel_pooling_prepare_v2(coor)])) == set(zip(rb.tolist(), rd.tolist(),
                                                                                            rf.tolist()))
    far = torch.full((1, 1, 1, 1, 1, 3), 1000.0)  # no point inside the grid
    assert vt.voxel_pooling_prepare_sorted(far) == (None,) * 5


def test_off_cuda_ray_iou_casts_with_the_portable_op_and_cuda_alone_is_a_clear_error(flashocc_root, monkeypatch):
    from projects.mmdet3d_plugin.ops import dvr

    monkeypatch.setattr(dvr, "_chosen", None)
    monkeypatch.delenv("FLASHOCC_DVR", raising=False)
    caster = dvr.ray_caster()
    assert caster.render_forward is dvr.render_forward_portable and caster.device == "cpu"
    for wanted, error in (("cuda", "FLASHOCC_DVR=cuda: the dvr extension needs CUDA, and this process runs on cpu"),
                          ("gpu", "FLASHOCC_DVR='gpu': expected one of auto, portable, cuda")):
        monkeypatch.setattr(dvr, "_chosen", None)
        monkeypatch.setenv("FLASHOCC_DVR", wanted)
        with pytest.raises((RuntimeError, ValueError), match=re.escape(error)):
            dvr.ray_caster()


def test_custom_focal_loss_builds_and_runs_on_cpu(flashocc_root):
    from projects.mmdet3d_plugin.models.losses.focal_loss import CustomFocalLoss

    loss = CustomFocalLoss()
    assert loss.c.device.type == "cpu"


def test_backbone_fp16_runs_the_backbone_in_half_precision(flashocc_root):
    from mmcv import Config
    from mmdet3d.models import build_model

    cfg = Config.fromfile(str(flashocc_root / "projects/configs/flashocc/flashocc-r50-smoke.py"))
    cfg.model.img_backbone_fp16 = True
    model = build_model(cfg.model)
    seen = []
    model.img_backbone.register_forward_hook(lambda mod, args, out: seen.append(out[0].dtype))
    feats, _ = model.image_encoder(torch.randn(1, 2, 3, 128, 352))
    assert seen == [torch.bfloat16]  # CPU autocast: bfloat16 (float16 on NPU and CUDA)
    assert feats.dtype == torch.float32  # the rest of the network stays in float32


# --- upstream's ops on npu tensors, through DrivingSDK: on the kit's emulated NPU ------------------------------------
# Each runs in a fresh interpreter with FLASHOCC_EMULATE_NPU=1 (test_device.run_child): the real mx-driving wheel, its
# compiled _C emulated (each kernel checks npu tensors, float32 features, int32 ranks, and counts its calls), no
# stand-in package. The same op runs there on CPU tensors too (the portable path) for the comparison.

UPSTREAM_ON_BOTH_DEVICES = """
    import importlib
    import torch
    import mx_driving
    op_name, args_named, grads_named = PARAMS['op'], PARAMS['args'], PARAMS['grad_inputs']
    upstream_op = getattr(importlib.import_module('projects.mmdet3d_plugin.ops.' + PARAMS['module']), op_name)
    inputs = torch.load(PARAMS['inputs'])
    observed = []
    real_op = getattr(mx_driving, op_name)
    def op(*args):  # observed, still called
        observed.append(args)
        return real_op(*args)
    setattr(mx_driving, op_name, op)

    def pooled(device):
        args = [inputs[name].to(device) if isinstance(inputs[name], torch.Tensor) else inputs[name]
                for name in args_named]
        for name in grads_named:
            args[args_named.index(name)] = args[args_named.index(name)].detach().requires_grad_()
        out = upstream_op(*args)
        (out * inputs['weights'].to(device)).sum().backward()
        return out, args, [args[args_named.index(name)].grad.cpu() for name in grads_named]

    out_cpu, _, grads_cpu = pooled('cpu')
    out_npu, args_npu, grads_npu = pooled('npu')
    torch.save({'cpu': [out_cpu.detach(), *grads_cpu], 'npu': [out_npu.detach().cpu(), *grads_npu]}, PARAMS['outputs'])
    # per argument of mx_driving's op: the very object upstream's op was given?
    result = {'out on': str(out_npu.device), 'calls': len(observed),
              'unchanged': [a is b for a, b in zip(observed[0], args_npu)] if observed else None}
"""


def upstream_op_on_npu_and_cpu(tmp_path: Path, root: Path, op: str, module: str, args: list[str],
                               grad_inputs: list[str], inputs: dict) -> tuple[dict, dict, dict]:
    """Upstream's op (`module`.`op` of FlashOCC's ops, called with inputs[name] for name in args, the grad_inputs
    requiring grad) on the emulated NPU and on the CPU in one fresh interpreter; returns (result, kernel calls,
    {'npu': [out, *grads], 'cpu': [out, *grads]})."""
    from test_device import run_child

    torch.save(inputs, tmp_path / "inputs.pt")
    params = {"op": op, "module": module, "args": args, "grad_inputs": grad_inputs,
              "inputs": str(tmp_path / "inputs.pt"), "outputs": str(tmp_path / "out.pt")}
    code = f"PARAMS = {params!r}\n" + textwrap.dedent(UPSTREAM_ON_BOTH_DEVICES)
    result, kernels = run_child(tmp_path, code, [str(root)], npu=True)
    return result, kernels, torch.load(tmp_path / "out.pt")


def test_bev_pool_v1_on_npu_goes_through_driving_sdk_in_hwdb_order(flashocc_root, tmp_path):
    """Upstream's coordinates are (x, y, z, b), DrivingSDK's (h, w, d, b): on npu tensors ops.bev_pool reorders them
    for mx_driving.bev_pool, whose kernels give the point loop's sums and gradients, as the portable path does."""
    g = torch.Generator().manual_seed(4)
    B, D, H, W, C = 2, 2, 4, 5, 8  # H != W: coordinates passed in the wrong order land elsewhere (or off the grid)
    n = 60
    feats = torch.randn(n, C, generator=g)
    coords = torch.stack([torch.randint(0, W, (n,), generator=g), torch.randint(0, H, (n,), generator=g),
                          torch.randint(0, D, (n,), generator=g), torch.randint(0, B, (n,), generator=g)], 1)
    weights = torch.randn(B, C, D, H, W, generator=g)  # d(sum(out * weights))/d(feats[i]) = weights at i's cell
    result, kernels, got = upstream_op_on_npu_and_cpu(
        tmp_path, flashocc_root, "bev_pool", "bev_pool.bev_pool", ["feats", "coords", "B", "D", "H", "W"],
        ["feats"], {"feats": feats, "coords": coords, "weights": weights, "B": B, "D": D, "H": H, "W": W})
    # feats and the sizes as given, coords reordered (and cast to int32, which the kernels require)
    assert result == {"out on": "npu:0", "calls": 1, "unchanged": [True, False, True, True, True, True]}
    assert kernels == {"npu_bev_pool": 1, "npu_bev_pool_backward": 1}
    expected = torch.zeros(B, C, D, H, W)
    expected_grad = torch.zeros(n, C)
    for i, (x, y, z, b) in enumerate(coords.tolist()):
        expected[b, :, z, y, x] += feats[i]
        expected_grad[i] = weights[b, :, z, y, x]
    for name, npu, cpu, want in zip(("out", "feats.grad"), got["npu"], got["cpu"], (expected, expected_grad)):
        torch.testing.assert_close(npu, want, msg=lambda m, name=name: f"npu {name} vs the point loop: {m}")
        torch.testing.assert_close(npu, cpu, msg=lambda m, name=name: f"npu {name} vs the portable op: {m}")


def test_bev_pool_v2_on_npu_goes_through_driving_sdk_unchanged(flashocc_root, tmp_path):
    """ops.bev_pool_v2 hands npu tensors to mx_driving.bev_pool_v2 as they are; its kernels give the portable op's
    output and gradients (depth and feat)."""
    from projects.mmdet3d_plugin.ops.bev_pool_v3.reference import bev_pool_v2_sorted, sort_into_intervals

    g = torch.Generator().manual_seed(5)
    depth = torch.rand(1, 2, 3, 4, 5, generator=g)
    feat = torch.randn(1, 2, 4, 5, 8, generator=g)
    n = 100
    ranks = (torch.randint(0, 40, (n,), generator=g).int(), torch.randint(0, depth.numel(), (n,), generator=g).int(),
             torch.randint(0, 40, (n,), generator=g).int())
    rb, rd, rf, starts, lengths = sort_into_intervals(*ranks)
    shape = (1, 1, 5, 8, 8)
    inputs = {"depth": depth, "feat": feat, "ranks_depth": rd, "ranks_feat": rf, "ranks_bev": rb, "shape": shape,
              "starts": starts, "lengths": lengths, "weights": torch.randn(1, 8, 1, 5, 8, generator=g)}
    result, kernels, got = upstream_op_on_npu_and_cpu(
        tmp_path, flashocc_root, "bev_pool_v2", "bev_pool_v2.bev_pool",
        ["depth", "feat", "ranks_depth", "ranks_feat", "ranks_bev", "shape", "starts", "lengths"], ["depth", "feat"],
        inputs)
    assert result == {"out on": "npu:0", "calls": 1, "unchanged": [True] * 8}
    assert kernels == {"npu_bev_pool_v2": 1, "npu_bev_pool_v2_backward": 1}
    torch.testing.assert_close(got["npu"][0], bev_pool_v2_sorted(depth, feat, rd, rf, rb, shape, starts, lengths))
    for name, npu, cpu in zip(("out", "depth.grad", "feat.grad"), got["npu"], got["cpu"]):
        torch.testing.assert_close(npu, cpu, msg=lambda m, name=name: f"npu {name} vs the portable op: {m}")
