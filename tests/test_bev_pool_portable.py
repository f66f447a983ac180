"""The portable bev_pool_v3 (taken from flashocc.patch itself) against the references."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")


@pytest.fixture
def pool():
    import importlib

    return importlib.import_module("flashocc.projects.mmdet3d_plugin.ops.bev_pool_v3")


def random_inputs(seed: int, B: int = 2, N: int = 3, D: int = 5, H: int = 4, W: int = 6, C: int = 8,
                  grid: tuple[int, int, int] = (2, 5, 7), points: int = 600, crowd: int = 3):
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(B, N, D, H, W, generator=g)
    feat = torch.randn(B, N, H, W, C, generator=g)
    ranks_depth = torch.randint(0, depth.numel(), (points,), generator=g).int()
    ranks_feat = torch.randint(0, feat.numel() // C, (points,), generator=g).int()
    cells = B * grid[0] * grid[1] * grid[2]
    ranks_bev = torch.randint(0, max(1, cells // crowd), (points,), generator=g).int()  # many repeats
    shape = (B, *grid, C)
    grad_out = torch.randn(B, C, *grid, generator=g)
    return depth, feat, (ranks_depth, ranks_feat, ranks_bev), shape, grad_out


def forward_backward(fn, depth, feat, ranks, shape, grad_out):
    depth = depth.detach().clone().requires_grad_()
    feat = feat.detach().clone().requires_grad_()
    out = fn(depth, feat, *ranks, shape)
    out.backward(grad_out)
    return out.detach(), depth.grad, feat.grad


def assert_close(actual, expected, what):
    torch.testing.assert_close(actual.double(), expected.double(), rtol=1e-5, atol=1e-5, msg=what)


def test_matches_the_point_by_point_definition(pool):
    depth, feat, ranks, shape, grad_out = random_inputs(0)
    out, g_depth, g_feat = forward_backward(pool.bev_pool_v3_portable, depth, feat, ranks, shape, grad_out)
    assert out.shape == (2, 8, 2, 5, 7)
    assert_close(out, pool.bev_pool_brute_force(depth, feat, *ranks, shape), "forward")
    ref_depth, ref_feat = pool.bev_pool_brute_force_grads(depth, feat, *ranks, grad_out)
    assert_close(g_depth, ref_depth, "grad depth")
    assert_close(g_feat, ref_feat, "grad feat")


def test_matches_upstreams_sort_and_interval_algorithm(pool):
    depth, feat, ranks, shape, grad_out = random_inputs(1, B=3, C=16, points=5000, crowd=5)
    got = forward_backward(pool.bev_pool_v3_portable, depth, feat, ranks, shape, grad_out)
    ref = forward_backward(pool.bev_pool_v3_sorted, depth.double(), feat.double(), ranks, shape,
                           grad_out.double())
    for what, a, b in zip(("forward", "grad depth", "grad feat"), got, ref):
        assert_close(a, b, what)


def test_upstream_bev_pool_v2_test_vector(pool):
    """Upstream's own (CUDA-only) test of bev_pool_v2: sum 4.4 and known gradients."""
    depth = torch.tensor([0.3, 0.4, 0.2, 0.1, 0.7, 0.6, 0.8, 0.9]).view(1, 1, 2, 2, 2).requires_grad_()
    feat = torch.ones(1, 1, 2, 2, 2).requires_grad_()
    ranks_depth = torch.tensor([0, 4, 1, 6]).int()
    ranks_feat = torch.tensor([0, 0, 1, 2]).int()
    ranks_bev = torch.tensor([0, 0, 1, 1]).int()
    out = pool.bev_pool_v3(depth, feat, ranks_depth, ranks_feat, ranks_bev, (1, 1, 2, 2, 2))
    loss = out.sum()
    loss.backward()
    assert loss.item() == pytest.approx(4.4, abs=1e-6)
    assert torch.allclose(depth.grad.flatten(), torch.tensor([2., 2., 0., 0., 2., 0., 2., 0.]))
    assert torch.allclose(feat.grad.flatten(), torch.tensor([1.0, 1.0, 0.4, 0.4, 0.8, 0.8, 0., 0.]))


def test_order_of_the_points_does_not_matter(pool):
    depth, feat, ranks, shape, grad_out = random_inputs(2)
    perm = torch.randperm(ranks[0].numel(), generator=torch.Generator().manual_seed(3))
    shuffled = tuple(r[perm] for r in ranks)
    a = forward_backward(pool.bev_pool_v3_portable, depth, feat, ranks, shape, grad_out)
    b = forward_backward(pool.bev_pool_v3_portable, depth, feat, shuffled, shape, grad_out)
    for what, x, y in zip(("forward", "grad depth", "grad feat"), a, b):
        assert_close(x, y, what)


def test_chunking_changes_nothing(pool, monkeypatch):
    depth, feat, ranks, shape, grad_out = random_inputs(4)
    whole = forward_backward(pool.bev_pool_v3_portable, depth, feat, ranks, shape, grad_out)
    monkeypatch.setattr(pool.portable, "CHUNK", 7)
    chunked = forward_backward(pool.bev_pool_v3_portable, depth, feat, ranks, shape, grad_out)
    for x, y in zip(whole, chunked):
        assert_close(x, y, "chunked")


def test_no_point_inside_the_grid_gives_zeros_and_zero_gradients(pool):
    depth, feat, _, shape, grad_out = random_inputs(5)
    empty = torch.zeros(0, dtype=torch.int32)
    out, g_depth, g_feat = forward_backward(pool.bev_pool_v3, depth, feat, (empty, empty, empty), shape,
                                            grad_out)
    assert out.shape == (2, 8, 2, 5, 7) and not out.any()
    assert g_depth is not None and not g_depth.any()
    assert g_feat is not None and not g_feat.any()


def test_backward_keeps_no_points_by_channels_tensor(pool):
    depth, feat, ranks, shape, _ = random_inputs(6, C=24, points=5000)
    out = pool.bev_pool_v3_portable(depth.requires_grad_(), feat.requires_grad_(), *ranks, shape)
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    n_points, channels = ranks[0].numel(), feat.shape[-1]
    assert saved, "expected the inputs and ranks to be saved"
    assert all(t.numel() < n_points * channels for t in saved), [tuple(t.shape) for t in saved]


def test_v1_mode_without_depth_sums_rows_into_hwdb_cells(pool):
    feats = torch.randn(5, 8)
    coords = torch.tensor([[0, 1, 0, 0], [0, 1, 0, 0], [2, 3, 1, 1], [1, 0, 0, 1], [2, 3, 1, 1]]).int()
    out = pool.bev_pool_v3_portable(None, feats, None, None, coords, (2, 2, 3, 4, 8))  # B, D, H, W, C
    assert out.shape == (2, 8, 2, 3, 4)
    assert torch.allclose(out[0, :, 0, 0, 1], feats[0] + feats[1])
    assert torch.allclose(out[1, :, 1, 2, 3], feats[2] + feats[4])
    assert torch.allclose(out[1, :, 0, 1, 0], feats[3])
    assert int((out.abs().sum(1) > 0).sum()) == 3  # nothing anywhere else


def test_cpu_tensors_use_the_portable_kernel_and_bad_override_is_refused(pool, monkeypatch):
    assert pool.implementation_for(torch.zeros(1)) == "portable"
    monkeypatch.setenv("FLASHOCC_BEV_POOL", "fastest")
    with pytest.raises(ValueError, match="FLASHOCC_BEV_POOL"):
        pool.implementation_for(torch.zeros(1))


def test_sort_into_intervals_reproduces_upstreams_prepare_output(pool):
    ranks_bev = torch.tensor([5, 1, 5, 3, 1, 1]).int()
    ranks_depth = torch.arange(6).int()
    ranks_feat = torch.arange(6).int() * 10
    rb, rd, rf, starts, lengths = pool.sort_into_intervals(ranks_bev, ranks_depth, ranks_feat)
    assert rb.tolist() == [1, 1, 1, 3, 5, 5]
    assert sorted(rd[:3].tolist()) == [1, 4, 5] and (rf == rd * 10).all()
    assert starts.tolist() == [0, 3, 4] and lengths.tolist() == [3, 1, 2]
    assert pool.sort_into_intervals(*(torch.zeros(0).int(),) * 3) == (None,) * 5
