# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""Check the BEV pooling kernel of this device against a reference: run it first.

    python tools/bev_pool_parity.py [--batch 1 2 4] [--json parity.json]

On an NPU it runs DrivingSDK's bev_pool_v3, on CUDA upstream's compiled
bev_pool_v2 (if built), on CPU the portable PyTorch bev_pool_v3, and compares
forward values and the gradients for depth and feat with a float64 reference
computed on the CPU: a point-by-point loop on small random inputs, upstream's
sort-and-interval algorithm at FlashOCC shapes (6 cameras, D 88, 16x44
feature map, C 64, 200x200x1 grid, ranks from the real prepare step on a
nuScenes-like camera rig). Prints max abs/rel errors and time per call, and
exits 1 if any error is above tolerance (2 if the kernel cannot run at all).
"""
import argparse
import importlib
import json
import math
import sys
import time
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import torch  # noqa: E402

from projects import device as device_module  # noqa: E402

# (the ops package also exports a function named bev_pool_v3: take the module itself)
pool = importlib.import_module('projects.mmdet3d_plugin.ops.bev_pool_v3')

# flashocc-r50: grid, depth bins, input size, feature stride.
GRID = {'x': [-40, 40, 0.4], 'y': [-40, 40, 0.4], 'z': [-1, 5.4, 6.4], 'depth': [1.0, 45.0, 0.5]}
INPUT_SIZE, DOWNSAMPLE, CHANNELS, CAMERAS = (256, 704), 16, 64, 6


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 2, 4],
                        help='batch sizes to test at FlashOCC shapes')
    parser.add_argument('--repeat', type=int, default=3, help='timed calls per case')
    parser.add_argument('--atol', type=float, default=1e-5)
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='pass if max abs error <= atol + rtol * max |reference|')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', help='also write the results here')
    return parser.parse_args()


def rig(batch, generator):
    """nuScenes-like six-camera rig with a random image augmentation."""
    sensor2ego = torch.zeros(batch, CAMERAS, 4, 4)
    cam_to_ego_axes = torch.tensor([[0., 0, 1], [-1, 0, 0], [0, -1, 0]])  # x right,y down,z fwd
    for cam in range(CAMERAS):
        yaw = math.radians([55, 0, -55, 110, 180, -110][cam])
        rot = torch.tensor([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0],
                            [0, 0, 1.]])
        sensor2ego[:, cam, :3, :3] = rot @ cam_to_ego_axes
        sensor2ego[:, cam, :3, 3] = torch.tensor([1.0 * math.cos(yaw), 1.0 * math.sin(yaw), 1.5])
        sensor2ego[:, cam, 3, 3] = 1
    scale = INPUT_SIZE[1] / 1600
    intrins = torch.tensor([[1266.4 * scale, 0, 816.3 * scale], [0, 1266.4 * scale, 491.5 * scale],
                            [0, 0, 1]]).expand(batch, CAMERAS, 3, 3).clone()
    intrins[..., 1, 2] -= (900 * scale - INPUT_SIZE[0]) / 2  # crop to the input height
    resize = 1 + 0.1 * (torch.rand(batch, CAMERAS, 1, generator=generator) - 0.5)
    post_rots = torch.diag_embed(torch.cat([resize.expand(-1, -1, 2), torch.ones(batch, CAMERAS, 1)], -1))
    post_trans = torch.zeros(batch, CAMERAS, 3)
    bda = torch.eye(3).expand(batch, 3, 3)
    return sensor2ego, sensor2ego.clone(), intrins, post_rots, post_trans, bda


def flashocc_case(batch, generator):
    """Inputs of the size flashocc-r50 pools, with ranks from the real prepare step."""
    from projects.mmdet3d_plugin.models.necks.view_transformer import LSSViewTransformer
    vt = LSSViewTransformer(grid_config=GRID, input_size=INPUT_SIZE, downsample=DOWNSAMPLE,
                            in_channels=8, out_channels=CHANNELS)
    coor = vt.get_ego_coor(*rig(batch, generator))
    ranks_bev, ranks_depth, ranks_feat = vt.voxel_pooling_prepare_v2(coor)
    fh, fw = INPUT_SIZE[0] // DOWNSAMPLE, INPUT_SIZE[1] // DOWNSAMPLE
    depth = torch.rand(batch, CAMERAS, vt.D, fh, fw, generator=generator).softmax(2)
    feat = torch.randn(batch, CAMERAS, fh, fw, CHANNELS, generator=generator)
    shape = (batch, int(vt.grid_size[2]), int(vt.grid_size[1]), int(vt.grid_size[0]), CHANNELS)
    return depth, feat, ranks_depth, ranks_feat, ranks_bev, shape


def random_case(generator):
    """Small inputs with repeated ranks in random order, B > 1."""
    B, N, D, H, W, C = 2, 2, 4, 3, 5, 8
    shape = (B, 2, 6, 7, C)
    n = 300
    depth = torch.rand(B, N, D, H, W, generator=generator)
    feat = torch.randn(B, N, H, W, C, generator=generator)
    ranks_depth = torch.randint(0, depth.numel(), (n,), generator=generator).int()
    ranks_feat = torch.randint(0, feat.numel() // C, (n,), generator=generator).int()
    ranks_bev = torch.randint(0, B * 2 * 6 * 7 // 3, (n,), generator=generator).int()  # crowded cells
    return depth, feat, ranks_depth, ranks_feat, ranks_bev, shape


def run(fn, depth, feat, ranks, shape, grad_out):
    depth = depth.detach().clone().requires_grad_()
    feat = feat.detach().clone().requires_grad_()
    out = fn(depth, feat, *ranks, shape)
    out.backward(grad_out)
    return out.detach(), depth.grad, feat.grad


def errors(candidate, reference):
    ref = reference.double().cpu()
    abs_err = (candidate.double().cpu() - ref).abs().max().item() if ref.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 0.0
    return abs_err, abs_err / scale if scale else 0.0, scale


def reference_result(name, depth, feat, ranks, shape, grad_out):
    if name == 'random':
        out = pool.bev_pool_brute_force(depth, feat, *ranks, shape)
        g_depth, g_feat = pool.bev_pool_brute_force_grads(depth, feat, *ranks, grad_out)
        return out, g_depth, g_feat, 'point-by-point loop, float64'
    out, g_depth, g_feat = run(pool.bev_pool_v3_sorted, depth.double(), feat.double(), ranks, shape,
                               grad_out.double())
    return out, g_depth, g_feat, 'sort-and-interval (upstream bev_pool_v2 algorithm), float64'


def time_per_call(fn, depth, feat, ranks, shape, grad_out, repeat, sync):
    run(fn, depth, feat, ranks, shape, grad_out)  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        run(fn, depth, feat, ranks, shape, grad_out)
    sync()
    return (time.perf_counter() - start) / repeat * 1000


def main():
    args = parse_args()
    generator = torch.Generator().manual_seed(args.seed)
    kind = device_module.device_type()
    target = torch.device({'npu': 'npu', 'cuda': 'cuda', 'cpu': 'cpu'}[kind])
    sync = {'npu': lambda: torch.npu.synchronize(), 'cuda': torch.cuda.synchronize,
            'cpu': lambda: None}[kind]
    probe = torch.zeros(1, device=target)
    implementation = pool.implementation_for(probe)
    print(f'device {kind}: bev_pool_v3 implementation = {implementation}')

    cases = [('random', random_case(generator))]
    cases += [(f'flashocc B={b}', flashocc_case(b, generator)) for b in args.batch]
    results, failed = [], False
    for name, (depth, feat, rd, rf, rb, shape) in cases:
        ranks = (rd, rf, rb)
        grad_out = torch.randn(shape[0], shape[4], *shape[1:4], generator=generator)
        ref_out, ref_gd, ref_gf, ref_name = reference_result(name.split()[0], depth, feat, ranks, shape,
                                                             grad_out)
        on_device = [t.to(target) for t in (depth, feat, *ranks, grad_out)]
        try:
            got = run(pool.bev_pool_v3, on_device[0], on_device[1], on_device[2:5], shape, on_device[5])
        except RuntimeError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 2
        row = {'case': name, 'points': int(rb.numel()), 'implementation': implementation,
               'reference': ref_name}
        for label, value, ref in zip(('forward', 'grad_depth', 'grad_feat'), got, (ref_out, ref_gd, ref_gf)):
            abs_err, rel_err, scale = errors(value, ref)
            ok = abs_err <= args.atol + args.rtol * scale
            failed |= not ok
            row[label] = {'max_abs_err': abs_err, 'max_rel_err': rel_err, 'ok': ok}
        row['ms_per_call'] = time_per_call(pool.bev_pool_v3, on_device[0], on_device[1], on_device[2:5],
                                           shape, on_device[5], args.repeat, sync)
        if kind == 'cpu' and name != 'random':
            row['sort_and_interval_ms_per_call'] = time_per_call(
                pool.bev_pool_v3_sorted, depth, feat, ranks, shape, grad_out, args.repeat, sync)
        results.append(row)
        verdict = 'ok' if all(row[k]['ok'] for k in ('forward', 'grad_depth', 'grad_feat')) else 'FAIL'
        print(f"{name:15s} {row['points']:>8d} pts  fwd {row['forward']['max_abs_err']:.2e}/"
              f"{row['forward']['max_rel_err']:.1e}  d(depth) {row['grad_depth']['max_abs_err']:.2e}/"
              f"{row['grad_depth']['max_rel_err']:.1e}  d(feat) {row['grad_feat']['max_abs_err']:.2e}/"
              f"{row['grad_feat']['max_rel_err']:.1e}  {row['ms_per_call']:8.1f} ms/call"
              + (f" (sort-and-interval {row['sort_and_interval_ms_per_call']:.1f})"
                 if 'sort_and_interval_ms_per_call' in row else '') + f'  {verdict}')
    print('errors are max abs / max rel (to the largest reference value); forward + backward per call')
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump({'device': kind, 'implementation': implementation, 'atol': args.atol,
                       'rtol': args.rtol, 'cases': results}, fh, indent=2)
    print('PARITY FAILED' if failed else 'parity ok')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
