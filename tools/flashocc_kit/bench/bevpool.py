"""`kit.py bench bevpool`: the port's BEV pooling against upstream's algorithm, on the CPU.

port:      LSSViewTransformer.voxel_pooling_prepare_v2 (sort-free ranks) + portable bev_pool_v3
           (chunked scatter-add, forward and backward)
upstream:  the same ranks, then sort_into_intervals (argsort + interval starts/lengths) +
           bev_pool_v2's algorithm in PyTorch (segment sums, autograd backward)

Inputs are flashocc-r50's (6 cameras, D 88, 16x44 features, C 64, 200x200x1 grid), with ranks from the
real prepare step on tools/bev_pool_parity.py's nuScenes-like rig. Times: forward + backward (and the
prepare step), interleaved, medians. Peak memory: measured in a fresh process per case, two ways --
the torch profiler's allocation events (peak of live tensor bytes above what existed before the step,
exact at the allocator level) and the kernel's RSS high-water mark (freed heap returned with
malloc_trim, the mark reset through /proc/self/clear_refs, then one step: the process-level view,
which also counts what glibc's allocator holds on to between tensors, so it reads higher).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import KitError
from . import common

VARIANTS = ("portable", "sort-and-interval")
TARGET_RATIO = 2.0


def load(flashocc: Path):
    """The port's pooling package and the parity tool's rig (both in the patched checkout)."""
    import importlib

    common.load_flashocc(flashocc)
    tools = str(flashocc / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    try:
        parity = importlib.import_module("bev_pool_parity")
    except ImportError as exc:
        raise KitError(f"{flashocc}/tools/bev_pool_parity.py does not import ({exc}): is flashocc.patch applied? "
                       "Fix: `python3 tools/kit.py apply`") from exc
    pool = importlib.import_module("projects.mmdet3d_plugin.ops.bev_pool_v3")
    return pool, parity


def case(parity, batch: int, seed: int = 0):
    """flashocc-r50-sized inputs: (view transformer, frustum coordinates, depth, feat, grad_out, shape)."""
    import torch

    from projects.mmdet3d_plugin.models.necks.view_transformer import LSSViewTransformer

    generator = torch.Generator().manual_seed(seed)
    vt = LSSViewTransformer(grid_config=parity.GRID, input_size=parity.INPUT_SIZE, downsample=parity.DOWNSAMPLE,
                            in_channels=8, out_channels=parity.CHANNELS)
    coor = vt.get_ego_coor(*parity.rig(batch, generator))
    fh, fw = parity.INPUT_SIZE[0] // parity.DOWNSAMPLE, parity.INPUT_SIZE[1] // parity.DOWNSAMPLE
    depth = torch.rand(batch, parity.CAMERAS, vt.D, fh, fw, generator=generator).softmax(2)
    feat = torch.randn(batch, parity.CAMERAS, fh, fw, parity.CHANNELS, generator=generator)
    shape = (batch, int(vt.grid_size[2]), int(vt.grid_size[1]), int(vt.grid_size[0]), parity.CHANNELS)
    grad_out = torch.randn(shape[0], shape[4], *shape[1:4], generator=generator)
    return vt, coor, depth, feat, grad_out, shape


def prepare(pool, variant: str, vt, coor):
    ranks = vt.voxel_pooling_prepare_v2(coor)  # (bev, depth, feat), unsorted
    if variant == "portable":
        return ranks
    return pool.sort_into_intervals(*ranks)  # (bev, depth, feat, starts, lengths), sorted


def pool_step(pool, variant: str, ranks, depth, feat, grad_out, shape):
    depth = depth.detach().clone().requires_grad_()
    feat = feat.detach().clone().requires_grad_()
    if variant == "portable":
        rb, rd, rf = ranks
        out = pool.bev_pool_v3_portable(depth, feat, rd, rf, rb, shape)
    else:
        rb, rd, rf, starts, lengths = ranks
        out = pool.bev_pool_v2_sorted(depth, feat, rd, rf, rb, shape, starts, lengths)
    out.backward(grad_out)
    return out.detach(), depth.grad, feat.grad


def timings(pool, parity, batch: int, repeat: int) -> dict:
    """Median ms of prepare and of pool forward+backward per variant, interleaved; plus agreement."""
    import torch

    vt, coor, depth, feat, grad_out, shape = case(parity, batch)
    results, times = {}, {v: {"prepare": [], "pool": []} for v in VARIANTS}
    for rep in range(repeat + 1):  # the first round warms up and is not counted
        for variant in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
            start = time.perf_counter()
            ranks = prepare(pool, variant, vt, coor)
            mid = time.perf_counter()
            results[variant] = pool_step(pool, variant, ranks, depth, feat, grad_out, shape)
            end = time.perf_counter()
            if rep:
                times[variant]["prepare"].append(common.ms(mid - start))
                times[variant]["pool"].append(common.ms(end - mid))
    agree = all(torch.allclose(a, b, rtol=1e-4, atol=1e-5)
                for a, b in zip(results["portable"], results["sort-and-interval"]))
    row = {"batch": batch, "points": int(vt.voxel_pooling_prepare_v2(coor)[0].numel()), "outputs_agree": agree}
    for variant in VARIANTS:
        prep, fwd_bwd = common.median(times[variant]["prepare"]), common.median(times[variant]["pool"])
        row[variant] = {"prepare_ms": prep, "fwd_bwd_ms": fwd_bwd, "step_ms": round(prep + fwd_bwd, 3)}
    upstream, port = row["sort-and-interval"], row["portable"]
    row["fwd_bwd_ratio"] = common.ratio(upstream["fwd_bwd_ms"], port["fwd_bwd_ms"])
    row["step_ratio"] = common.ratio(upstream["step_ms"], port["step_ms"])
    return row


# --- peak memory, in a child process per case --------------------------------------------------

def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _profiled_peak(fn) -> int:
    """Peak bytes of live tensors allocated while fn runs (torch profiler allocation events)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_us()):  # stable: recording order within a microsecond
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def child_measure(flashocc: Path, variant: str, batch: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    pool, parity = load(flashocc)
    vt, coor, depth, feat, grad_out, shape = case(parity, batch)
    def step():
        pool_step(pool, variant, prepare(pool, variant, vt, coor), depth, feat, grad_out, shape)

    step()  # warm-up (lazy initialisations)
    ranks = [prepare(pool, variant, vt, coor)]
    pool_only = _profiled_peak(lambda: pool_step(pool, variant, ranks[0], depth, feat, grad_out, shape))
    ranks.clear()  # not held while the whole step is measured
    whole = _profiled_peak(step)
    rss = {}
    try:  # hand freed heap back to the kernel, reset the RSS high-water mark (Linux >= 4.0), run once
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kib("VmRSS")
        step()
        rss = {"rss_peak_increase_mib": round((_rss_kib("VmHWM") - before) / 1024, 1)}
    except (OSError, AttributeError):  # no /proc or no glibc: the profiler's number stands alone
        pass
    return {"profiler_peak_mib": {"step": round(whole / 2**20, 1), "pool_fwd_bwd": round(pool_only / 2**20, 1)},
            **rss}


def memory(flashocc: Path, variant: str, batch: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                    os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "flashocc_kit.bench.bevpool", "--child", str(flashocc), variant,
                           str(batch), str(threads)], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise KitError(f"memory measurement of {variant} (B={batch}) failed: "
                       f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(lines[-1])


def run(flashocc: Path, batches: list[int], repeat: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    pool, parity = load(flashocc)
    rows = []
    for batch in batches:
        row = timings(pool, parity, batch, repeat)
        for variant in VARIANTS:
            row[variant]["memory"] = memory(flashocc, variant, batch, threads)
        up, port = row["sort-and-interval"]["memory"], row["portable"]["memory"]
        row["peak_memory_ratio"] = common.ratio(up["profiler_peak_mib"]["step"], port["profiler_peak_mib"]["step"])
        rows.append(row)
    return {"kind": "flashocc-kit bench bevpool", "schema": 1, "machine": common.machine(),
            "versions": common.versions(),
            "settings": {"batches": batches, "repeat": repeat, "torch_threads": threads,
                         "shapes": "6 cams, D 88, 16x44, C 64, 200x200x1"},
            "cases": rows,
            "target": {"fwd_bwd_ratio": TARGET_RATIO,
                       "met": all(r["fwd_bwd_ratio"] >= TARGET_RATIO and r["outputs_agree"]
                                  and r["portable"]["memory"]["profiler_peak_mib"]["step"]
                                  <= r["sort-and-interval"]["memory"]["profiler_peak_mib"]["step"] for r in rows)}}


def report(document: dict) -> str:
    rows = []
    for r in document["cases"]:
        for variant in VARIANTS:
            v = r[variant]
            mem = v["memory"]
            rows.append([f"B={r['batch']} {variant}", f"{r['points']}", f"{v['prepare_ms']:.1f}",
                         f"{v['fwd_bwd_ms']:.1f}", f"{v['step_ms']:.1f}", f"{mem['profiler_peak_mib']['step']:.0f}",
                         f"{mem['profiler_peak_mib']['pool_fwd_bwd']:.0f}", f"{mem.get('rss_peak_increase_mib', '-')}"])
        rows.append([f"B={r['batch']} ratio", "", "", f"{r['fwd_bwd_ratio']:.2f}x", f"{r['step_ratio']:.2f}x",
                     f"{r['peak_memory_ratio']:.2f}x", "", ""])
    return common.format_rows(["case", "points", "prepare ms", "fwd+bwd ms", "step ms", "peak MiB",
                               "pool peak MiB", "RSS peak MiB"], rows)


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--child":
    print(json.dumps(child_measure(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
