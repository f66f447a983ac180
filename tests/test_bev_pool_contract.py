"""DrivingSDK's own test cases for bev_pool, bev_pool_v2 and bev_pool_v3, held against the port's ops.

DrivingSDK (tests/torch/test_bev_pool*.py in its repository) checks its NPU kernels against CPU goldens
on random inputs. The same shapes, the same input distributions and the same goldens, written anew here
(point loops in float64), run against the port's portable ops, and -- when the kit's emulated NPU is
prepared -- against the real mx-driving wheel's wrappers on emulated npu tensors and the port's own
NPU branch. The rest of the contract (argument checks, dtypes, DrivingSDK's documented limits) follows.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import types
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")
np = pytest.importorskip("numpy", reason="needs numpy: run the suite in the kit's environment")

KIT_ROOT = Path(__file__).resolve().parents[1]
POOL_MODULE = "flashocc.projects.mmdet3d_plugin.ops.bev_pool_v3"
V1_RANKS_NOT_2D = "ranks_bev must be 2D when running without depth"  # DrivingSDK's message


@dataclasses.dataclass(frozen=True)
class Case:
    """One of DrivingSDK's cases: the op (as its test drives it) and B, D, H, W, C, N_RANKS."""

    op: str  # bev_pool_v3, bev_pool_v3_no_depth (depth=None; _rows: feat (N, C)), bev_pool_v2, bev_pool (v1)
    B: int
    D: int
    H: int
    W: int
    C: int
    n: int

    @property
    def id(self) -> str:
        return f"{self.op}-{self.B}x{self.D}x{self.H}x{self.W}-C{self.C}-N{self.n}"


# test_bev_pool_v3.py's shapes (both with and without depth); test_bev_pool_v2.py's and test_bev_pool.py's
V3_SHAPES = [(1, 1, 1, 1, 8, 1), (3, 3, 3, 3, 16, 3), (3, 3, 15, 15, 32, 33), (1, 5, 17, 23, 8, 777),
             (32, 7, 11, 17, 64, 9999)]
V1_V2_SHAPES = [(1, 1, 1, 1, 1, 1), (3, 3, 3, 3, 3, 3), (3, 3, 15, 15, 17, 33), (1, 5, 128, 128, 31, 777),
                (32, 4, 128, 128, 64, 9999)]
# bev_pool_v3.md's v1-mode example (feat (4, 64), B 4, 128x128), and the largest v3 shape so called
V1_ROWS_SHAPES = [(4, 1, 128, 128, 64, 4), (32, 7, 11, 17, 64, 9999)]
CASES = ([Case("bev_pool_v3", *s) for s in V3_SHAPES] + [Case("bev_pool_v3_no_depth", *s) for s in V3_SHAPES]
         + [Case("bev_pool_v3_no_depth_rows", *s) for s in V1_ROWS_SHAPES]
         + [Case("bev_pool_v2", *s) for s in V1_V2_SHAPES] + [Case("bev_pool", *s) for s in V1_V2_SHAPES])


def randint(g: torch.Generator, high: int, n: int) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=g, dtype=torch.int32)


def generate(case: Case) -> dict:
    """DrivingSDK's generators: uniform [0, 1) values, uniform ranks; seeded by the case."""
    B, D, H, W, C, n = case.B, case.D, case.H, case.W, case.C, case.n
    g = torch.Generator().manual_seed(zlib.crc32(case.id.encode()))
    if case.op == "bev_pool_v3":  # every point lands in one of the first B cells: crowded sums
        return dict(depth=torch.rand(B, 1, D, H, W, generator=g), feat=torch.rand(B, 1, H, W, C, generator=g),
                    ranks_depth=randint(g, B * D * H * W, n), ranks_feat=randint(g, B * H * W, n),
                    ranks_bev=randint(g, B, n), grad_out=torch.rand(B, C, D, H, W, generator=g))
    if case.op.startswith("bev_pool_v3_no_depth"):  # DrivingSDK's test: feat has more rows than points
        coords = torch.stack([randint(g, H, n), randint(g, W, n), randint(g, D, n), randint(g, B, n)], 1)
        feat = torch.rand(n, C, generator=g) if case.op.endswith("_rows") else torch.rand(B, C, H, W, D, generator=g)
        return dict(feat=feat, ranks_bev=coords, grad_out=torch.rand(B, C, D, H, W, generator=g))
    if case.op == "bev_pool_v2":  # sorted ranks; intervals are runs of equal ranks_feat, not of ranks_bev
        ranks = [randint(g, high, n).sort().values for high in (B * D * H * W, B * H * W, B * D * H * W)]
        kept = torch.ones(n, dtype=torch.bool)
        kept[1:] = ranks[1][1:] != ranks[1][:-1]
        starts = torch.where(kept)[0].int()
        lengths = torch.diff(starts, append=torch.tensor([n], dtype=torch.int32)).int()
        return dict(feat=torch.rand(B, 1, H, W, C, generator=g), depth=torch.rand(B, 1, D, H, W, generator=g),
                    grad_out=torch.rand(B, C, D, H, W, generator=g),
                    ranks_depth=ranks[0], ranks_feat=ranks[1], ranks_bev=ranks[2], starts=starts,
                    lengths=lengths)
    coords = torch.stack([randint(g, H, n), randint(g, W, n), randint(g, D, n), randint(g, B, n)], 1)
    return dict(feat=torch.rand(n, C, generator=g), geom_feat=coords,
                grad_out=torch.rand(B, C, D, H, W, generator=g))


def contributions(case: Case, x: dict) -> list[tuple[int, int | None, int, int]]:
    """The ops' semantics as a list: per point (cell it adds to, depth index or None, feature row, cell its
    gradient reads). For v2 the forward cell is its interval's first point's, the gradient's its own."""
    D, H, W = case.D, case.H, case.W

    def cell(h: int, w: int, d: int, b: int) -> int:
        return ((b * D + d) * H + h) * W + w

    if case.op == "bev_pool_v3":
        return [(b, d, f, b) for d, f, b in zip(x["ranks_depth"].tolist(), x["ranks_feat"].tolist(),
                                                   x["ranks_bev"].tolist())]
    if case.op.startswith("bev_pool_v3_no_depth") or case.op == "bev_pool":
        coords = x["geom_feat" if case.op == "bev_pool" else "ranks_bev"].tolist()
        return [(cell(*c), None, i, cell(*c)) for i, c in enumerate(coords)]
    rd, rf, rb = x["ranks_depth"].tolist(), x["ranks_feat"].tolist(), x["ranks_bev"].tolist()
    return [(rb[start], rd[j], rf[j], rb[j]) for start, length in zip(x["starts"].tolist(), x["lengths"].tolist())
            for j in range(start, start + length)]


def cell_rows(grid: torch.Tensor, cells: list[int]) -> torch.Tensor:
    """Rows (len(cells), C) of a (B, C, D, H, W) tensor at flat (b, d, h, w) cells, without a permuted copy."""
    flat = grid.reshape(grid.shape[0], grid.shape[1], -1)
    index = torch.tensor(cells, dtype=torch.long)
    return flat[index // flat.shape[2], :, index % flat.shape[2]]


def golden(case: Case, x: dict) -> dict[str, dict[int, np.ndarray]]:
    """Forward and gradients, point by point in float64, as {row index: value} of what is not zero."""
    feat = x["feat"].detach().double().numpy().reshape(-1, case.C)
    depth = x["depth"].detach().double().numpy().reshape(-1) if "depth" in x else None
    points = contributions(case, x)
    read = sorted({p[3] for p in points})
    grad = dict(zip(read, cell_rows(x["grad_out"], read).double().numpy()))
    out: dict[int, np.ndarray] = {}
    grad_depth: dict[int, np.ndarray] = {}
    grad_feat: dict[int, np.ndarray] = {}
    for cell, d, f, grad_cell in points:
        weight = 1.0 if d is None else depth[d]
        out[cell] = out.get(cell, 0.0) + weight * feat[f]
        grad_feat[f] = grad_feat.get(f, 0.0) + weight * grad[grad_cell]
        if d is not None:
            grad_depth[d] = grad_depth.get(d, 0.0) + np.dot(grad[grad_cell], feat[f])
    return {"out": out, "grad_depth": grad_depth, "grad_feat": grad_feat}


def assert_matches(what: str, got: torch.Tensor, expected: dict[int, np.ndarray], width: int,
                   channels_first: bool = False) -> None:
    """got's rows of width (a (B, C, D, H, W) output's cells if channels_first) are expected where it lists
    them, and zero elsewhere."""
    got = got.detach().cpu()
    if channels_first:
        nonzero_rows = got.reshape(got.shape[0], width, -1).ne(0).any(1).flatten()
    else:
        nonzero_rows = got.reshape(-1, width).ne(0).any(1)
    nonzero = torch.nonzero(nonzero_rows).flatten().tolist()
    assert nonzero == sorted(expected), f"{what}: {len(nonzero)} rows not zero, expected {len(expected)}"
    index = sorted(expected)
    rows = cell_rows(got, index) if channels_first else got.reshape(-1, width)[index]
    want = torch.from_numpy(np.stack([np.broadcast_to(expected[i], (width,)) for i in index]))
    torch.testing.assert_close(rows.double(), want, rtol=1e-5, atol=1e-5, msg=lambda m: f"{what}: {m}")


def run_case(case: Case, ops: dict, device: str = "cpu") -> None:
    """Runs one case through ops ({op name: callable with DrivingSDK's signature}) on device; asserts it."""
    x = generate(case)
    on = {k: v.to(device) for k, v in x.items()}
    shape = [case.B, case.D, case.H, case.W, case.C]
    feat = on["feat"].detach().requires_grad_()  # on the CPU .to() returned x's own tensor
    depth = on["depth"].detach().requires_grad_() if "depth" in on else None
    if case.op == "bev_pool_v3":
        out = ops["bev_pool_v3"](depth, feat, on["ranks_depth"], on["ranks_feat"], on["ranks_bev"], shape)
    elif case.op.startswith("bev_pool_v3_no_depth"):  # ranks_feat too is None, as DrivingSDK's test passes it
        out = ops["bev_pool_v3"](None, feat, None, None, on["ranks_bev"], shape)
    elif case.op == "bev_pool_v2":
        out = ops["bev_pool_v2"](depth, feat, on["ranks_depth"], on["ranks_feat"], on["ranks_bev"], shape,
                                 on["starts"], on["lengths"])
    else:
        out = ops["bev_pool"](feat, on["geom_feat"], case.B, case.D, case.H, case.W)
    assert tuple(out.shape) == (case.B, case.C, case.D, case.H, case.W) and out.dtype == torch.float32
    out.backward(on["grad_out"])
    expected = golden(case, x)
    assert_matches("forward", out, expected["out"], case.C, channels_first=True)
    assert_matches("grad feat", feat.grad, expected["grad_feat"], case.C)
    if depth is not None:
        assert_matches("grad depth", depth.grad, expected["grad_depth"], 1)


@pytest.fixture(scope="module")
def pool():
    return importlib.import_module(POOL_MODULE)


def portable_ops(pool) -> dict:
    return {"bev_pool_v3": pool.bev_pool_v3_portable, "bev_pool_v2": pool.bev_pool_v2_portable,
            "bev_pool": pool.bev_pool_portable}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_driving_sdk_case_on_the_portable_op(pool, case):
    run_case(case, portable_ops(pool))


@pytest.mark.parametrize("case", [c for c in CASES if c.op.startswith("bev_pool_v3")], ids=lambda c: c.id)
def test_driving_sdk_case_through_the_dispatching_op(pool, case, monkeypatch):
    monkeypatch.delenv("FLASHOCC_BEV_POOL", raising=False)
    run_case(case, {"bev_pool_v3": pool.bev_pool_v3})


def upstream_ops() -> dict:
    """Upstream's ops.bev_pool_v2 and ops.bev_pool as patched (CPU: the portable ops); v1 takes (x, y, z, b)."""
    from projects.mmdet3d_plugin.ops.bev_pool.bev_pool import bev_pool
    from projects.mmdet3d_plugin.ops.bev_pool_v2.bev_pool import bev_pool_v2

    return {"bev_pool_v2": bev_pool_v2,
            "bev_pool": lambda feat, geom, *bdhw: bev_pool(feat, geom[:, [1, 0, 2, 3]], *bdhw)}


@pytest.mark.parametrize("case", [c for c in CASES if c.op in ("bev_pool_v2", "bev_pool") and c.n < 9999],
                         ids=lambda c: c.id)
def test_driving_sdk_case_through_upstreams_patched_op(flashocc_root, case):
    run_case(case, upstream_ops())


# ---------------------------------------------------------------- the rest of the contract, on the portable op

def v3_inputs(dtype=torch.float32, points: int = 5, C: int = 8):
    g = torch.Generator().manual_seed(7)
    depth = torch.rand(1, 2, 3, 4, 5, generator=g).to(dtype).requires_grad_()
    feat = torch.rand(1, 2, 4, 5, C, generator=g).to(dtype).requires_grad_()
    ranks = [randint(g, high, points) for high in (depth.numel(), feat.numel() // C, 2 * 3 * 4)]
    return depth, feat, ranks, (1, 2, 3, 4, C)


@pytest.mark.parametrize("op", ["bev_pool_v3", "bev_pool_v3_portable"])
@pytest.mark.parametrize("ranks_bev", [torch.zeros(3, dtype=torch.int32), torch.zeros(0, dtype=torch.int32)],
                         ids=["three-points", "empty"])
def test_without_depth_ranks_bev_must_be_2d_with_driving_sdks_error(pool, op, ranks_bev):
    with pytest.raises(ValueError) as raised:
        getattr(pool, op)(None, torch.rand(3, 8), None, None, ranks_bev, (1, 1, 2, 2, 8))
    assert str(raised.value) == V1_RANKS_NOT_2D


@pytest.mark.parametrize("op", ["bev_pool_v3", "bev_pool_v3_portable"])
def test_without_depth_and_no_point_gives_float32_zeros_and_zero_gradients(pool, op):
    feat = torch.rand(0, 8, dtype=torch.float16, requires_grad=True)
    out = getattr(pool, op)(None, feat, None, None, torch.zeros(0, 4, dtype=torch.int32), (2, 1, 3, 4, 8))
    assert out.shape == (2, 8, 1, 3, 4) and out.dtype == torch.float32 and not out.any()
    out.sum().backward()
    assert feat.grad is not None and feat.grad.dtype == torch.float16 and not feat.grad.any()


@pytest.mark.parametrize("points", [5, 0], ids=["points", "empty"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_output_is_float32_for_every_input_dtype_and_gradients_keep_theirs(pool, dtype, points):
    depth, feat, ranks, shape = v3_inputs(dtype, points)
    out = pool.bev_pool_v3(depth, feat, *ranks, shape)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert depth.grad.dtype == feat.grad.dtype == dtype
    if points:  # the same numbers as in float32 from the same (rounded) inputs
        ref = pool.bev_pool_v3(depth.detach().float(), feat.detach().float(), *ranks, shape)
        torch.testing.assert_close(out, ref)


def test_empty_ranks_give_zeros_even_where_the_inputs_hold_inf(pool):
    depth, feat, _, shape = v3_inputs(torch.float16, 0)
    with torch.no_grad():
        feat[0, 0, 0, 0, 0] = float("inf")
    empty = torch.zeros(0, dtype=torch.int32)
    out = pool.bev_pool_v3(depth, feat, empty, empty, empty, shape)
    assert not out.isnan().any() and not out.any()


def test_rows_past_the_points_get_no_gradient_without_depth(pool):
    feat = torch.rand(6, 8, requires_grad=True)
    coords = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.int32)  # (h, w, d, b): 2 points, 6 rows
    out = pool.bev_pool_v3(None, feat, None, None, coords, (1, 1, 2, 2, 8))
    torch.testing.assert_close(out[0, :, 0, 0, 1], feat[0].detach())
    torch.testing.assert_close(out[0, :, 0, 1, 0], feat[1].detach())
    out.sum().backward()
    assert feat.grad[:2].eq(1).all() and not feat.grad[2:].any()


@pytest.mark.parametrize("args, error, message", [
    (lambda d, f, r, s: (None, torch.rand(1, 8), None, None, torch.zeros(2, 4, dtype=torch.int32), s),
     ValueError, "point i pools row i of feat: 2 points, but feat has 1 rows"),
    (lambda d, f, r, s: (None, torch.rand(3, 4), None, None, torch.zeros(2, 4, dtype=torch.int32), s),
     ValueError, "feat's dim 1 is the channel count and must equal bev_feat_shape's C=8"),
    (lambda d, f, r, s: (None, torch.rand(3, 8), None, None, torch.zeros(2, 3, dtype=torch.int32), s),
     ValueError, "so shape (N, 4)"),
    (lambda d, f, r, s: (d, f, r[0], r[1][:4], r[2], s), ValueError, "must have one length"),
    (lambda d, f, r, s: (d, f, None, r[1], r[2], s), ValueError, "ranks_depth is None"),
    (lambda d, f, r, s: (d, f, r[0], r[1], r[2].float(), s), TypeError, "ranks_bev must hold integer indices"),
    (lambda d, f, r, s: (d, f, r[0], r[1], r[2].view(5, 1), s), ValueError, "ranks_bev must be 1-D"),
    (lambda d, f, r, s: (d, f[..., :4], *r, s), ValueError, "feat's last dim is the channel count"),
    (lambda d, f, r, s: (d, f.int(), *r, s), TypeError, "feat must be a floating-point tensor"),
    (lambda d, f, r, s: (d, f, *r, s[:4]), ValueError, "bev_feat_shape must be five positive sizes"),
], ids=["v1-too-few-rows", "v1-channels", "v1-coords", "lengths", "missing-ranks", "float-ranks", "2d-ranks",
        "channels", "int-feat", "shape"])
def test_arguments_outside_the_contract_are_refused_before_pooling(pool, args, error, message):
    depth, feat, ranks, shape = v3_inputs()
    for op in (pool.bev_pool_v3, pool.bev_pool_v3_portable):
        with pytest.raises(error, match="Fix: ") as raised:
            op(*args(depth.detach(), feat.detach(), ranks, shape))
        assert message in str(raised.value)


def test_v2_pools_each_interval_into_its_first_points_cell(pool):
    depth = torch.ones(1, 1, 1, 1, 4, requires_grad=True)
    feat = torch.tensor([1.0, 10.0, 100.0, 1000.0]).view(1, 1, 1, 4, 1).requires_grad_()
    ranks = torch.arange(4, dtype=torch.int32)  # point i: depth i, feat i, cell i
    starts, lengths = torch.tensor([0, 2], dtype=torch.int32), torch.tensor([2, 1], dtype=torch.int32)
    out = pool.bev_pool_v2_portable(depth, feat, ranks, ranks, ranks, (1, 1, 1, 4, 1), starts, lengths)
    assert out.flatten().tolist() == [11.0, 0.0, 100.0, 0.0]  # point 1 goes to cell 0; point 3 is in no interval
    out.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4))
    # the kernels' gradient: each point at its own cell, all points (DrivingSDK's backward re-cuts the intervals)
    assert feat.grad.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert depth.grad.flatten().tolist() == [1.0, 20.0, 300.0, 4000.0]


def test_v2_intervals_are_checked_and_upstreams_intervals_give_v3s_result(pool):
    depth, feat, ranks, shape = v3_inputs(points=40)
    rb, rd, rf, starts, lengths = pool.sort_into_intervals(ranks[2], ranks[0], ranks[1])
    got = pool.bev_pool_v2_portable(depth, feat, rd, rf, rb, shape, starts, lengths)
    torch.testing.assert_close(got, pool.bev_pool_v3(depth, feat, *ranks, shape))
    with pytest.raises(ValueError, match="interval_starts and interval_lengths must have same size"):
        pool.bev_pool_v2_portable(depth, feat, rd, rf, rb, shape, starts, lengths[:-1])


def test_v1_feature_count_is_checked_with_driving_sdks_error(pool):
    with pytest.raises(ValueError) as raised:
        pool.bev_pool_portable(torch.rand(3, 8), torch.zeros(2, 4, dtype=torch.int32), 1, 1, 2, 2)
    assert str(raised.value) == "The number of features and geometry features should be the same."


# ---------------------------------------------------------------- DrivingSDK's limits on the NPU branch

class NpuLike(torch.Tensor):
    """A CPU tensor that says it lives on an NPU: enough to reach the NPU branch."""

    @property
    def device(self):
        return types.SimpleNamespace(type="npu")


@pytest.fixture
def kernel_calls(monkeypatch):
    """A stand-in mx_driving whose bev_pool_v3 records its calls (no kernel may run past the limits)."""
    calls = []
    module = type(sys)("mx_driving")
    module.bev_pool_v3 = lambda *args: calls.append(args) or torch.zeros(1)
    monkeypatch.setitem(sys.modules, "mx_driving", module)
    monkeypatch.delenv("FLASHOCC_BEV_POOL", raising=False)
    return calls


@pytest.mark.parametrize("C, message", [
    (12, "needs the channel count C a multiple of 8 and at most 360, got C=12"),
    (368, "needs the channel count C a multiple of 8 and at most 360, got C=368"),
])
def test_npu_branch_refuses_channels_outside_driving_sdks_limits(pool, kernel_calls, C, message):
    depth, feat, ranks, shape = v3_inputs(C=C)
    with pytest.raises(ValueError, match="FLASHOCC_BEV_POOL=portable") as raised:
        pool.bev_pool_v3(depth.as_subclass(NpuLike), feat.as_subclass(NpuLike), *ranks, shape)
    assert message in str(raised.value) and kernel_calls == []


def test_npu_branch_refuses_outputs_past_2_to_the_31(pool, kernel_calls):
    depth, feat, ranks, _ = v3_inputs(C=64)
    with pytest.raises(ValueError, match=r"B\*D\*H\*W\*C <= 2\^31"):
        pool.bev_pool_v3(depth.as_subclass(NpuLike), feat.as_subclass(NpuLike), *ranks, (64, 16, 512, 512, 64))
    assert kernel_calls == []


@pytest.mark.parametrize("C", [8, 64, 360])
def test_npu_branch_calls_the_kernel_within_the_limits(pool, kernel_calls, C):
    depth, feat, ranks, shape = v3_inputs(C=C)
    pool.bev_pool_v3(depth.as_subclass(NpuLike), feat.as_subclass(NpuLike), *ranks, shape)
    ((got_depth, got_feat, *got_ranks, got_shape),) = kernel_calls
    assert got_depth.dtype == got_feat.dtype == torch.float32 and got_shape == list(shape)
    assert [r.dtype for r in got_ranks] == [torch.int32] * 3


def test_npu_branch_passes_v1_mode_on_as_driving_sdk_takes_it(pool, kernel_calls):
    feat = torch.rand(4, 16, dtype=torch.float16).as_subclass(NpuLike)
    coords = torch.zeros(3, 4, dtype=torch.int64)
    pool.bev_pool_v3(None, feat, None, None, coords, (1, 1, 2, 2, 16))
    ((depth, got_feat, ranks_depth, ranks_feat, ranks_bev, shape),) = kernel_calls
    assert depth is None and ranks_depth is None and ranks_feat is None
    assert got_feat.dtype == torch.float32 and ranks_bev.dtype == torch.int32 and ranks_bev.shape == (3, 4)
    assert shape == [1, 1, 2, 2, 16]


# ---------------------------------------------------------------- the same cases on the emulated NPU

EMULATED_CHILD = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]  # tests/ (this module) and port/ (the port's ops)
import npu_emulator.activate
npu_emulator.activate.activate()
import importlib, torch, torch_npu, mx_driving
import test_bev_pool_contract as contract

pool = importlib.import_module(contract.POOL_MODULE)
suites = {
    "wheel": {"bev_pool_v3": mx_driving.bev_pool_v3, "bev_pool_v2": mx_driving.bev_pool_v2,
              "bev_pool": mx_driving.bev_pool},
    "port": {"bev_pool_v3": pool.bev_pool_v3},  # the port's NPU branch, calling the wheel
}
results = {}
for suite, ops in suites.items():
    for case in contract.CASES:
        if case.op.split("_no_depth")[0] not in ops:  # the port's NPU branch: v3 only
            continue
        try:
            contract.run_case(case, ops, "npu")
            results[f"{suite}/{case.id}"] = "ok"
        except Exception as exc:
            results[f"{suite}/{case.id}"] = f"{type(exc).__name__}: {exc}"[:1500]
    try:
        ops["bev_pool_v3"](None, torch.rand(3, 8).npu(), None, None, torch.zeros(3, dtype=torch.int32).npu(),
                           [1, 1, 2, 2, 8])
        results[f"{suite}/1-D ranks_bev without depth"] = "no error"
    except Exception as exc:
        ok = type(exc) is ValueError and str(exc) == contract.V1_RANKS_NOT_2D
        results[f"{suite}/1-D ranks_bev without depth"] = "ok" if ok else f"{type(exc).__name__}: {exc}"
print("RESULTS " + json.dumps(results))
"""

PREPARE_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from npu_emulator import install
from npu_emulator.build import build_extension
cache = install.default_cache_dir()
version = install.default_mx_driving_version()
if version is None:
    raise SystemExit("no mx-driving release is pinned for this torch")
print("PREPARED " + json.dumps([str(build_extension(cache)), str(install.install_mx_driving(cache, version))]))
"""


def _last_line(text: str, prefix: str) -> str | None:
    found = [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]
    return found[-1] if found else None


@pytest.fixture(scope="module")
def emulated_results(tmp_path_factory) -> dict:
    """Every case run in a child interpreter on the emulated NPU (built and installed once, cached)."""
    tools = KIT_ROOT / "tools"
    if not (tools / "npu_emulator" / "activate.py").is_file():
        pytest.skip("the kit's NPU emulator (tools/npu_emulator) is not in this checkout")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHOCC_")}
    prep = subprocess.run([sys.executable, "-c", PREPARE_CHILD, str(tools)], capture_output=True, text=True,
                          timeout=900, env=base_env)
    prepared = _last_line(prep.stdout, "PREPARED ")
    if prep.returncode != 0 or prepared is None:
        pytest.skip("the emulated NPU could not be prepared (`PYTHONPATH=tools python -m npu_emulator.install` "
                    f"says why): {(prep.stderr or prep.stdout).strip().splitlines()[-1:]}")
    extension, mx_dir = json.loads(prepared)
    from npu_emulator import ENV_COUNT, ENV_EXTENSION, ENV_FLAG, ENV_MX_DRIVING  # conftest put tools/ on sys.path

    env = {**base_env, ENV_FLAG: "1", ENV_EXTENSION: extension, ENV_MX_DRIVING: mx_dir, ENV_COUNT: "1",
           "PYTHONPATH": str(tools)}
    proc = subprocess.run([sys.executable, "-c", EMULATED_CHILD, str(KIT_ROOT / "tests"), str(KIT_ROOT / "port")],
                          capture_output=True, text=True, timeout=900, env=env,
                          cwd=tmp_path_factory.mktemp("emulated"))
    results = _last_line(proc.stdout, "RESULTS ")
    assert proc.returncode == 0 and results is not None, f"exit {proc.returncode}\n{proc.stderr[-5000:]}"
    return json.loads(results)


EMULATED = ([f"wheel/{c.id}" for c in CASES]
            + [f"port/{c.id}" for c in CASES if c.op.startswith("bev_pool_v3")]
            + [f"{suite}/1-D ranks_bev without depth" for suite in ("wheel", "port")])


@pytest.mark.parametrize("name", EMULATED)
def test_driving_sdk_case_on_the_emulated_npu(emulated_results, name):
    assert emulated_results.get(name) == "ok", emulated_results.get(name, "not run")
