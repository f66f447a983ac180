"""bevdet.py's sensor -> key-ego chain in float32 (faster on the NPU) against upstream's float64.

Ego poses carry global translations of hundreds to thousands of metres. The reference port's
float32 chain (torch.inverse of the global pose, then products) loses about a millimetre there;
the port's chain subtracts the translations first and stays within float32 rounding of small
numbers. Both errors are printed; the port's is held to a micrometre scale.
"""

from __future__ import annotations

import importlib
import math

import pytest

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")


def rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> torch.Tensor:
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll),
                              math.sin(roll))
    rz = torch.tensor([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]], dtype=torch.float64)
    ry = torch.tensor([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]], dtype=torch.float64)
    rx = torch.tensor([[1, 0, 0], [0, cr, -sr], [0, sr, cr]], dtype=torch.float64)
    return rz @ ry @ rx


def realistic_poses(batch: int = 32, cameras: int = 6, seed: int = 0):
    """nuScenes-like: ego at up to 3 km from the map origin, any heading, cameras a few ms apart."""
    g = torch.Generator().manual_seed(seed)
    ego2global = torch.zeros(batch, cameras, 4, 4, dtype=torch.float64)
    sensor2ego = torch.zeros_like(ego2global)
    for b in range(batch):
        origin = (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * torch.tensor([3000.0, 3000.0, 20.0],
                                                                                         dtype=torch.float64)
        heading = float(torch.rand(1, generator=g)) * 2 * math.pi
        for c in range(cameras):
            ego2global[b, c, :3, :3] = rotation(heading + 0.002 * c, 0.01, -0.005)
            ego2global[b, c, :3, 3] = origin + torch.tensor([0.08 * c, -0.03 * c, 0.0], dtype=torch.float64)
            sensor2ego[b, c, :3, :3] = rotation(c * math.pi / 3) @ rotation(0, 0, -math.pi / 2)
            sensor2ego[b, c, :3, 3] = torch.tensor([1.5, 0.5 - 0.2 * c, 1.6], dtype=torch.float64)
    ego2global[..., 3, 3] = 1
    sensor2ego[..., 3, 3] = 1
    return sensor2ego.float(), ego2global.float()  # what the pipeline hands the model


def upstream_float64(sensor2ego, ego2global):
    global2keyego = torch.inverse(ego2global[:, 0:1].double())
    return global2keyego @ ego2global.double() @ sensor2ego.double()


def test_float32_chain_matches_float64_on_global_poses():
    pose_utils = importlib.import_module("flashocc.projects.mmdet3d_plugin.models.detectors.pose_utils")
    sensor2ego, ego2global = realistic_poses()
    reference = upstream_float64(sensor2ego, ego2global)
    ported = pose_utils.sensor_to_key_ego(sensor2ego, ego2global).double()
    naive = (torch.inverse(ego2global[:, 0:1]) @ ego2global @ sensor2ego).double()  # the reference port's

    def errors(x):
        return ((x - reference)[..., :3, 3].abs().max().item(), (x - reference)[..., :3, :3].abs().max().item())

    port_t, port_r = errors(ported)
    naive_t, naive_r = errors(naive)
    print(f"\nsensor->key-ego vs float64: port float32 {port_t:.2e} m / {port_r:.1e} rot, "
          f"reference port float32 {naive_t:.2e} m / {naive_r:.1e} rot")
    assert ported.dtype == torch.float64 and port_t < 1e-5 and port_r < 1e-6
    assert naive_t > 10 * port_t  # why the port does not simply drop to float32


def test_relative_pose_is_the_identity_for_the_key_camera():
    pose_utils = importlib.import_module("flashocc.projects.mmdet3d_plugin.models.detectors.pose_utils")
    _, ego2global = realistic_poses(batch=2)
    rel = pose_utils.relative_ego_poses(ego2global)
    torch.testing.assert_close(rel[:, 0], torch.eye(4).expand(2, 4, 4), atol=1e-6, rtol=0)
