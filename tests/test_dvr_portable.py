"""The portable dvr.render_forward against the kernel's line-by-line transcription (ops/dvr/reference.py).

Both must agree exactly: the same stop voxel and the same float32 distances (the same float64 arithmetic,
rounded once). Hand-made grids cover the traversal's corner cases (a wall, rays along voxel edges and
through corners, origins inside occupied voxels or outside the grid, every face, the step limit); full
200x200x16 scenes with the rays ray_metrics.py casts cover the real workload (a few hundred rays each:
the reference is plain Python).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from flashocc_kit.bench import rays as ray_scenes

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)
torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")

DVR = "flashocc.projects.mmdet3d_plugin.ops.dvr"
portable = importlib.import_module(f"{DVR}.portable")
reference = importlib.import_module(f"{DVR}.reference")
PC_RANGE = [-40, -40, -1.0, 40, 40, 5.4]
VOXEL_SIZE = 0.4


def _sigma(occ_xyz):
    """(X, Y, Z) bool grid -> (1, 1, Z, Y, X) float32 sigma."""
    occ = torch.from_numpy(np.asarray(occ_xyz, dtype=np.float32))
    return occ.permute(2, 1, 0)[None, None].contiguous()


def _inputs(origin, points, tindex=None):
    o = torch.tensor(origin, dtype=torch.float32).view(1, -1, 3)
    p = torch.tensor(points, dtype=torch.float32).view(1, -1, 3)
    t = torch.zeros(1, p.shape[1]) if tindex is None else torch.tensor(tindex, dtype=torch.float32).view(1, -1)
    return o, p, t


def _assert_same(got, want):
    """Exact agreement of [pred_dist, gt_dist, coord_index]."""
    assert len(got) == 3
    for g, w, name in zip(got, want, ('pred_dist', 'gt_dist', 'coord_index')):
        assert g.dtype == torch.float32, name
        g = g.cpu().numpy()
        assert g.shape == w.shape, name
        bad = ~((g == w) | (np.isnan(g) & np.isnan(w)))
        assert not bad.any(), f'{name} differs at {np.argwhere(bad)[:5].tolist()}: {g[bad][:5]} vs {w[bad][:5]}'


def _check(sigma, origin, points, tindex, phase='test', rays=None, **kw):
    """Run both; return the reference's result."""
    grid = [sigma.shape[1], sigma.shape[2], sigma.shape[3], sigma.shape[4]]
    got = portable.render_forward(sigma, origin, points, tindex, grid, phase, **kw)
    want = reference.render_forward(sigma, origin, points, tindex, grid, phase,
                                    rays=rays)
    if rays is not None:
        keep = np.zeros(want[0].shape, dtype=bool)
        for n, c in rays:
            keep[n, c] = True
        got = [g.cpu()[torch.from_numpy(keep)] for g in got]
        want = [w[keep] for w in want]
    _assert_same(got, want)
    return want


def _case(occ_xyz, origin, points, phase='test', tindex=None):
    o, p, t = _inputs(origin, points, tindex)
    return _check(_sigma(occ_xyz), o, p, t, phase)


@pytest.fixture(autouse=True)
def _one_thread():
    # the machine is shared; results do not depend on threads
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize('phase', ['test', 'train'])
def test_wall(phase):
    occ = np.zeros((12, 6, 4), dtype=bool)
    occ[7] = True  # the plane x in [7, 8)
    o = [1.25, 2.5, 1.5]
    pts = [[2.25, 2.5, 1.5],  # straight at it: leaves voxel 7 at x = 8
           [2.25, 3.0, 1.7],  # obliquely
           [0.25, 2.5, 1.5]]  # away from it: leaves the grid at x = 0
    pred, gt, coord = _case(occ, o, pts, phase)
    assert pred[0, 0] == np.float32(8 - 1.25)
    assert coord[0, 0].tolist() == [7, 2, 1]
    assert coord[0, 1, 0] == 7
    assert pred[0, 2] == np.float32(1.25) and coord[0, 2].tolist() == [0, 2, 1]
    if phase == 'test':
        assert gt[0, 0] == 1.0
    else:
        assert gt[0, 0] == 1.0  # shorter than the way out


def test_ray_along_voxel_edges():
    # origins on voxel boundaries, rays along the boundary planes / lines:
    # the coordinate on a boundary belongs to the voxel above it (int())
    occ = np.zeros((10, 10, 6), dtype=bool)
    occ[6, 3, 2] = True
    occ[6, 2, 2] = True
    occ[2, 7, 3] = True
    pts_o = [
        ([1.0, 3.0, 2.0], [2.0, 3.0, 2.0]),  # along the edge y = 3, z = 2
        ([1.0, 3.0, 2.5], [2.0, 3.0, 2.5]),  # along the face y = 3
        ([2.0, 1.0, 3.0], [2.0, 2.0, 3.0]),  # +y along the edge x = 2, z = 3
        ([2.0, 9.0, 3.0], [2.0, 8.0, 3.0]),  # -y along the same edge
        ([2.0, 9.0, 3.0], [1.0, 9.0, 3.0]),  # -x from a corner
    ]
    for o, p in pts_o:
        _case(occ, o, [p])
    pred, _, coord = _case(occ, [1.0, 3.0, 2.0], [[2.0, 3.0, 2.0]])
    assert coord[0, 0].tolist() == [6, 3, 2] and pred[0, 0] == 6.0
    _, _, coord = _case(occ, [2.0, 9.0, 3.0], [[2.0, 8.0, 3.0]])
    assert coord[0, 0].tolist() == [2, 7, 3]


def test_ray_through_corners():
    # a 45 degree ray meets x and y boundaries at the same distance; the
    # kernel then steps y before x (and z before both)
    occ = np.zeros((6, 6, 6), dtype=bool)
    occ[1, 0, 0] = True  # would be hit if x went first
    pred, _, coord = _case(occ, [0.5, 0.5, 0.5], [[1.5, 1.5, 0.5]])
    # path (0,0) -> (0,1) -> (1,1) -> ... never (1,0): leaves at (5, 5)
    assert coord[0, 0].tolist() == [5, 5, 0]
    occ[0, 1, 0] = True
    pred, _, coord = _case(occ, [0.5, 0.5, 0.5], [[1.5, 1.5, 0.5]])
    assert coord[0, 0].tolist() == [0, 1, 0]
    assert pred[0, 0] == np.float32(math.sqrt(2) / 2)
    # 3D diagonal: z first, then y, then x, at every corner
    occ = np.zeros((6, 6, 6), dtype=bool)
    occ[0, 0, 1] = True
    _, _, coord = _case(occ, [0.5, 0.5, 0.5], [[1.5, 1.5, 1.5]])
    assert coord[0, 0].tolist() == [0, 0, 1]
    occ[0, 0, 1] = False
    occ[1, 0, 0] = occ[0, 1, 0] = True
    _, _, coord = _case(occ, [0.5, 0.5, 0.5], [[1.5, 1.5, 1.5]])
    assert coord[0, 0].tolist() == [5, 5, 5]
    # grazing corners in every octant and a few rational slopes
    occ = np.random.default_rng(0).random((8, 8, 8)) < 0.2
    occ[4, 4, 4] = False
    pts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            for sz in (-1, 1):
                for k in (1.0, 2.0, 0.5):
                    pts.append([4.5 + sx, 4.5 + sy * k, 4.5 + sz * k * k])
    _case(occ, [4.5, 4.5, 4.5], pts)
    _case(occ, [4.0, 4.0, 4.0], pts)


@pytest.mark.parametrize('phase', ['test', 'train'])
def test_origin_inside_occupied_voxel(phase):
    occ = np.zeros((5, 5, 5), dtype=bool)
    occ[2, 2, 2] = True
    pts = [[3.3, 2.6, 2.6], [1.3, 2.4, 2.8], [2.3, 2.6, 0.1], [2.3, 2.6, 2.6]]
    pred, _, coord = _case(occ, [2.3, 2.6, 2.6], pts, phase)
    # the origin voxel counts; the distance is where the ray leaves it
    assert (coord[0, :3] == [2, 2, 2]).all()
    assert pred[0, 0] == np.float32(3 - float(np.float32(2.3)))
    # zero-length ray (end point == origin): the kernel's direction is NaN,
    # it walks down in z and reports a NaN distance
    assert math.isnan(pred[0, 3]) and coord[0, 3].tolist() == [2, 2, 2]


@pytest.mark.parametrize('phase', ['test', 'train'])
def test_leave_through_each_face(phase):
    occ = np.zeros((7, 6, 5), dtype=bool)
    o = [3.3, 2.7, 2.4]
    pts = [[4.3, 2.9, 2.5], [2.3, 2.5, 2.3], [3.4, 3.7, 2.5], [3.2, 1.7, 2.3],
           [3.4, 2.6, 3.4], [3.2, 2.8, 1.4]]
    pred, gt, coord = _case(occ, o, pts, phase)
    assert coord[0, 0, 0] == 6 and coord[0, 1, 0] == 0
    assert coord[0, 2, 1] == 5 and coord[0, 3, 1] == 0
    assert coord[0, 4, 2] == 4 and coord[0, 5, 2] == 0
    if phase == 'train':
        assert (gt <= pred).all()


@pytest.mark.parametrize('phase', ['test', 'train'])
def test_empty_and_full_grids(phase):
    rng = np.random.default_rng(1)
    o = [6.3, 5.1, 2.7]
    pts = (np.array(o) + rng.normal(size=(200, 3)) * 3).tolist()
    empty = np.zeros((13, 11, 5), dtype=bool)
    pred, gt, coord = _case(empty, o, pts, phase)
    # every ray ends at the boundary of the grid
    X, Y, Z = empty.shape
    at_face = ((coord[0] == 0) | (coord[0] == [X - 1, Y - 1, Z - 1])).any(1)
    assert at_face.all()
    pred, gt, coord = _case(~empty, o, pts, phase)
    assert (coord[0] == [6, 5, 2]).all()


def test_origin_outside_grid():
    occ = np.random.default_rng(2).random((9, 8, 5)) < 0.1
    pts = []
    o = [-3.7, 4.2, 2.5]  # outside, left of x = 0
    rng = np.random.default_rng(3)
    for _ in range(100):
        pts.append((np.array(o) + rng.normal(size=3) * [3, 2, 1]).tolist())
    pred, gt, coord = _case(occ, o, pts)
    # rays pointing away never enter: no result at all
    away = np.array(pts)[:, 0] < o[0]
    assert (pred[0, away] == -1).all() and (gt[0, away] == -1).all()
    assert (coord[0, away] == 0).all()
    assert (pred[0, ~away] != -1).any()
    _case(occ, o, pts, 'train')
    # in (-1, 0) int() truncates to voxel 0: "inside", with a negative exit
    pred, _, coord = _case(occ, [-0.4, 3.5, 2.5], [[-1.4, 3.5, 2.5], [0.6, 3.5, 2.5]])
    assert pred[0, 0] == np.float32(-0.4) and coord[0, 0].tolist() == [0, 3, 2]
    # far above the grid, looking down
    _case(occ, [4.5, 4.5, 40.0], (np.array([4.5, 4.5, 40.0]) + rng.normal(size=(50, 3))
                                  * [0.3, 0.3, 1]).tolist(), 'train')


def test_padded_rays_and_time_index(monkeypatch):
    rng = np.random.default_rng(4)
    sig = torch.from_numpy((rng.random((2, 3, 4, 6, 7)) < 0.3).astype(np.float32))
    origin = torch.from_numpy(rng.uniform([0, 0, 0], [7, 6, 4], size=(2, 3, 3))
                              .astype(np.float32))
    origin[1, 2] = torch.tensor([-1.5, 3.2, 5.5])  # outside: the general path
    calls = []
    general = portable._march_general

    def spy(*args):
        calls.append(args[1])
        return general(*args)

    monkeypatch.setattr(portable, '_march_general', spy)
    points = torch.from_numpy(rng.uniform(-2, 9, size=(2, 40, 3)).astype(np.float32))
    tindex = torch.from_numpy(rng.integers(-1, 3, size=(2, 40)).astype(np.float32))
    tindex[0, 0] = 1.7  # float index: truncated
    for phase in ('test', 'train'):
        pred, gt, _ = _check(sig, origin, points, tindex, phase)
        assert (pred[tindex.numpy() < 0] == -1).all()
    # the outside origin's rays went through the general path, on grid (1, 2)
    assert calls and all((g == 1 * 3 + 2).all() for g in calls)
    # T == 1 with several origins: tindex picks the origin only
    _check(sig[:, :1].contiguous(), origin, points, tindex.abs())
    # end points with a 4th column (the kernel reads three)
    p4 = torch.cat([points, torch.ones(2, 40, 1)], 2)
    _check(sig, origin, p4, tindex)


def test_step_limit():
    # the kernel stops after MAX_STEP + 1 = 1001 iterations, wherever it is
    occ = np.zeros((700, 700, 1), dtype=bool)
    pts = [[10.1, 10.9, 0.5], [10.9, 10.1, 0.5], [10.7, 10.6, 0.5]]
    pred, _, coord = _case(occ, [0.3, 0.2, 0.5], pts)
    assert coord[0, :, :2].sum(1).max() == 1000
    # entering late: the steps outside count too
    _case(occ, [-200.3, -300.2, 0.5], [[-199.1, -298.9, 0.5]])


def test_unknown_phase():
    o, p, t = _inputs([0.5, 0.5, 0.5], [[1.5, 0.5, 0.5]])
    with pytest.raises(ValueError):
        portable.render_forward(_sigma(np.zeros((2, 2, 2))), o, p, t, [1, 2, 2, 2], 'val')


def occupancy(sem: np.ndarray) -> torch.Tensor:
    """process_one_sample's occ_pred: (1, 1, Z, Y, X) float32, 1 where not free."""
    occ = (torch.from_numpy(sem.astype(np.int64)) != ray_scenes.FREE).float()
    return occ.permute(2, 1, 0)[None, None].contiguous()


def ray_inputs(lidar_origin: torch.Tensor, lidar_rays: torch.Tensor):
    """process_one_sample's caster inputs for one (1, 1, 3) float64 origin, computed as it computes them."""
    offset = torch.Tensor(PC_RANGE[:3])[None, None, :]
    scaler = torch.Tensor([VOXEL_SIZE] * 3)[None, None, :]
    lidar_endpts = lidar_rays[None] + lidar_origin
    return (((lidar_origin - offset) / scaler).float(), ((lidar_endpts - offset) / scaler).float(),
            torch.zeros([1, lidar_rays.shape[0]]))


@pytest.fixture(scope="module")
def metric_rays(flashocc_root) -> torch.Tensor:
    """The (14040, 3) unit rays ray_metrics.py casts from every origin (upstream's own function)."""
    from projects.mmdet3d_plugin.core.evaluation.ray_metrics import generate_lidar_rays

    return torch.from_numpy(generate_lidar_rays())


def _metric_inputs(rays, seed, n_origins=3):
    """Scene, prediction, rays and origins as ray_metrics.py gets them."""
    rng = np.random.default_rng(seed)
    sem = ray_scenes.semantic_scene(rng)
    pred = ray_scenes.prediction_of(rng, sem)
    return rng, sem, pred, rays, ray_scenes.lidar_origins(rng, n_origins)


@pytest.mark.parametrize('seed', [0, 1])
def test_metric_rays_full_grid(metric_rays, seed):
    rng, sem, pred, rays, origins = _metric_inputs(metric_rays, seed)
    assert rays.shape == (14040, 3)
    for t in range(origins.shape[1]):
        o, p, ti = ray_inputs(origins[:, t:t + 1], rays)
        sel = rng.choice(rays.shape[0], 150, replace=False)
        for labels in (sem, pred):
            _check(occupancy(labels), o, p, ti, rays=[(0, int(c)) for c in sel])


def test_random_rays_full_grid():
    # random origins (in and around the grid) and directions, random
    # clutter: far from the metric's geometry
    rng = np.random.default_rng(5)
    sig = torch.from_numpy((rng.random((2, 1, 16, 200, 200)) < 0.02).astype(np.float32))
    origin = torch.from_numpy(rng.uniform([-20, -20, -4], [220, 220, 20], size=(2, 1, 3))
                              .astype(np.float32))
    origin[0, 0] = torch.tensor([100.25, 99.5, 7.0])
    points = origin + torch.from_numpy(rng.normal(size=(2, 300, 3)).astype(np.float32))
    rays = [(n, c) for n in range(2) for c in range(300)]
    for phase in ('test', 'train'):
        _check(sig, origin, points, torch.zeros(2, 300), phase, rays=rays)


def test_chunking_and_batch(metric_rays):
    rng, sem, pred, rays, origins = _metric_inputs(metric_rays, 6, 2)
    ins = [ray_inputs(origins[:, t:t + 1], rays) for t in range(2)]
    sigma = torch.cat([occupancy(pred), occupancy(sem)])
    o = torch.cat([ins[0][0], ins[1][0]])
    p = torch.cat([ins[0][1], ins[1][1]])
    t = torch.zeros(2, rays.shape[0])
    whole = portable.render_forward(sigma, o, p, t, [1, 16, 200, 200], 'test')
    chunked = portable.render_forward(sigma, o, p, t, [1, 16, 200, 200], 'test',
                                      chunk_size=1000)
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)
    # each entry alone, as ray_metrics.py calls it
    for n in range(2):
        one = portable.render_forward(sigma[n:n + 1], o[n:n + 1], p[n:n + 1],
                                      t[n:n + 1], [1, 16, 200, 200], 'test')
        for a, b in zip(whole, one):
            assert torch.equal(a[n:n + 1], b)
    sel = rng.choice(rays.shape[0], 100, replace=False)
    _check(sigma, o, p, t, rays=[(n, int(c)) for n in range(2) for c in sel])


def test_stop_labels_on_a_full_scene(metric_rays):
    # the metric's use: the stop voxel's label and distance
    rng, sem, pred, rays, origins = _metric_inputs(metric_rays, 7, 2)
    o, p, ti = ray_inputs(origins[:, :1], rays)
    d, _, coord = portable.render_forward(occupancy(sem), o, p, ti,
                                          [1, 16, 200, 200], 'test')
    coord = coord[0].long()
    labels = torch.from_numpy(sem.astype(np.int64))[coord[:, 0], coord[:, 1], coord[:, 2]]
    hit = labels != ray_scenes.FREE
    assert 0.3 < hit.float().mean() < 1.0
    # an occupied stop voxel is the first occupied voxel: its exit distance
    # is at least the distance to it from the origin voxel
    assert (d[0] >= 0).all()


def test_inputs_the_kernel_cannot_take_are_refused_naming_them():
    sigma = _sigma(np.zeros((2, 2, 2)))
    o, p, t = _inputs([0.5, 0.5, 0.5], [[1.5, 0.5, 0.5]])
    render = portable.render_forward
    with pytest.raises(ValueError, match=r"expected sigma \(N, T, Z, Y, X\).*got \(1, 2, 2, 2\)"):
        render(sigma[0], o, p, t, [1, 2, 2, 2], 'test')
    with pytest.raises(ValueError, match=r"inconsistent shapes: .* tindex \(1, 2\)"):
        render(sigma, o, p, torch.zeros(1, 2), [1, 2, 2, 2], 'test')
    with pytest.raises(ValueError, match="tindex must be finite"):
        render(sigma, o, p, torch.full((1, 1), float("nan")), [1, 2, 2, 2], 'test')
    with pytest.raises(IndexError, match=r"tindex out of range for origin of shape \(1, 1, 3\)"):
        render(sigma, o, p, torch.ones(1, 1), [1, 2, 2, 2], 'test')
    three_origins = o.repeat(1, 3, 1)  # origins for t = 0..2, a grid for t = 0..1 only
    with pytest.raises(IndexError, match="tindex out of range for sigma with T = 2"):
        render(sigma.repeat(1, 2, 1, 1, 1), three_origins, p, torch.full((1, 1), 2.0), [2, 2, 2, 2], 'test')
