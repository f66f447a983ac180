"""The emulated Ascend NPU (tools/npu_emulator): device, memory, autograd, autocast, hccl, DDP, DrivingSDK.

Every emulated run happens in a child interpreter (activating the emulation renames torch's
PrivateUse1 backend and, with transfer_to_npu, patches torch.cuda: nothing this test process may
keep). The extension is built once into the kit's cache (about a minute the first time); the
mx-driving wheel is installed once from PyPI into the same cache.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import KIT_ROOT, free_port

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")

TOOLS = KIT_ROOT / "tools"

from npu_emulator import ENV_EXTENSION, ENV_FLAG, ENV_MX_DRIVING, install  # noqa: E402


@pytest.fixture(scope="session")
def extension() -> Path:
    from npu_emulator.build import build_extension

    return build_extension(install.default_cache_dir())


@pytest.fixture(scope="session")
def mx_driving_dir() -> Path:
    version = install.default_mx_driving_version()
    if version is None:
        pytest.skip(f"no mx-driving release is pinned for torch {torch.__version__}")
    try:
        return install.install_mx_driving(install.default_cache_dir(), version)
    except RuntimeError as exc:
        pytest.skip(f"mx-driving=={version} could not be installed from PyPI (offline?): "
                    f"{str(exc).strip().splitlines()[-1]}")


def child_env(extension: Path, mx_dir: Path | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_FLAG, ENV_EXTENSION, ENV_MX_DRIVING)}
    env.update({ENV_FLAG: "1", ENV_EXTENSION: str(extension), "PYTHONPATH": str(TOOLS),
                "FLASHOCC_EMULATE_NPU_COUNT": "8", **extra})
    if mx_dir is not None:
        env[ENV_MX_DRIVING] = str(mx_dir)
    return env


PRELUDE = """\
import npu_emulator.activate
npu_emulator.activate.activate()
import torch
import torch_npu
"""


def run_emulated(tmp_path: Path, code: str, extension: Path, mx_dir: Path | None = None, args: tuple = (),
                 timeout: int = 300, **extra: str) -> str:
    """Runs PRELUDE + code in a fresh interpreter with the emulation on; returns its output."""
    script = tmp_path / f"emulated_{abs(hash(code))}.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=child_env(extension, mx_dir, **extra))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def test_tensors_live_on_npu_devices_and_move_between_them(tmp_path, extension):
    out = run_emulated(tmp_path, """
        a = torch.ones(2).npu()
        assert str(a.device) == "npu:0" and a.is_npu and not a.is_cpu
        b = a.to("npu:1")
        assert str(b.device) == "npu:1" and torch.equal(b.cpu(), torch.ones(2))
        assert torch.npu.is_available() and torch.npu.device_count() == 8
        with torch.npu.device(3):
            assert str(torch.zeros(1, device="npu").device) == "npu:3"
        assert torch.npu.current_device() == 0 and torch.npu.get_device_name() == "Ascend910B1"
        print(repr(a + 1))
        """, extension)
    assert "tensor([2., 2.], device='npu:0')" in out


def test_an_op_mixing_npu_and_cpu_tensors_is_refused_as_on_cuda(tmp_path, extension):
    out = run_emulated(tmp_path, """
        x = torch.randn(3).npu()
        for mixed in (lambda: x + torch.randn(3), lambda: torch.randn(3).mul_(x.cpu()).add(x),
                      lambda: x.to("npu:1") * x):
            try:
                mixed()
            except RuntimeError as e:
                print("REFUSED", e)
            else:
                print("ACCEPTED")
        print("SCALAR", (x + torch.tensor(2.0)).device)  # CPU 0-dim tensors are scalars, as on CUDA
        """, extension)
    assert out.count("REFUSED") == 3 and "ACCEPTED" not in out
    assert ("Expected all tensors to be on the same device, but found at least two devices, npu:0 and cpu!"
            in out)
    assert "npu:1 and npu:0!" in out or "npu:0 and npu:1!" in out
    assert "SCALAR npu:0" in out


def test_in_place_ops_write_the_memory_every_view_sees(tmp_path, extension):
    run_emulated(tmp_path, """
        base = torch.arange(12, dtype=torch.float32).npu()
        grid = base.view(3, 4)
        host = torch_npu._C.host_view(base)  # the CPU tensor over the same memory
        assert host.data_ptr() == base.data_ptr()
        grid[1].mul_(10)                      # a view's in-place op
        torch.add(grid, 1, out=grid)          # an out= op into the same memory
        grid.t()[0].zero_()
        expected = (torch.arange(12.).view(3, 4) * torch.tensor([[1.], [10.], [1.]]) + 1)
        expected[:, 0] = 0
        assert torch.equal(base.cpu().view(3, 4), expected), base
        assert torch.equal(host.view(3, 4), expected)
        out = torch.empty(0, device="npu")
        torch.cat([base, base], out=out)      # an out= tensor the kernel has to grow
        assert out.shape == (24,) and torch.equal(out.cpu()[12:], expected.view(-1))
        """, extension)


def test_memory_statistics_follow_allocations(tmp_path, extension):
    run_emulated(tmp_path, """
        torch.npu.reset_peak_memory_stats()
        start = torch.npu.memory_allocated()
        x = torch.empty(1024, 1024, device="npu")   # 4 MiB
        assert torch.npu.memory_allocated() - start == 4 * 2**20
        y = x * 2                                   # a kernel's result is counted too
        assert torch.npu.memory_allocated() - start == 8 * 2**20
        del x, y
        assert torch.npu.memory_allocated() == start
        assert torch.npu.max_memory_allocated() - start == 8 * 2**20
        assert torch.npu.max_memory_reserved() >= torch.npu.max_memory_allocated()
        torch.npu.reset_peak_memory_stats()
        assert torch.npu.max_memory_allocated() == start
        z = torch.empty(256, device="npu:1")
        assert torch.npu.memory_allocated(1) == 1024 and torch.npu.memory_allocated(0) == start
        assert torch.npu.memory_stats(1)["allocated_bytes.all.current"] == 1024
        """, extension)


def test_autograd_through_npu_ops_matches_the_cpu(tmp_path, extension):
    run_emulated(tmp_path, """
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                  torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 5))
        x = torch.randn(4, 3, 8, 8)
        target = torch.randint(0, 5, (4,))
        results = {}
        for device in ("cpu", "npu"):
            model = __import__("copy").deepcopy(net).to(device)
            loss = torch.nn.functional.cross_entropy(model(x.to(device)), target.to(device))
            loss.backward()
            results[device] = [loss.detach().cpu()] + [p.grad.cpu() for p in model.parameters()]
            assert all(p.grad.device.type == device for p in model.parameters())
        for a, b in zip(results["cpu"], results["npu"]):
            torch.testing.assert_close(a, b)
        """, extension)


def test_autocast_on_npu_runs_convolutions_and_matmuls_in_float16(tmp_path, extension):
    out = run_emulated(tmp_path, """
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 8, 3).npu()
        lin = torch.nn.Linear(8, 4).npu()
        x = torch.randn(2, 3, 10, 10, device="npu")
        with torch.autocast("npu", dtype=torch.float16):
            y = conv(x)
            z = lin(y.mean((2, 3)))
            s = torch.softmax(z, 1)
        assert y.dtype == torch.float16 and z.dtype == torch.float16 and y.device.type == "npu"
        assert not torch.npu.is_autocast_enabled()
        reference = torch.nn.functional.conv2d(x.cpu(), conv.weight.cpu().half().float(),
                                               conv.bias.cpu().half().float())
        torch.testing.assert_close(y.float().cpu(), reference, atol=2e-2, rtol=2e-2)
        s.float().sum().backward()
        assert conv.weight.grad.dtype == torch.float32 and conv.weight.grad.device.type == "npu"
        with torch_npu.npu.amp.autocast():
            assert conv(x).dtype == torch.float16
        print("UPCAST", torch_npu._C.upcast_ops())
        """, extension)
    assert "aten::convolution/Half" in out  # float16 convolutions run in float32, rounded back


def test_a_resnet50_forward_and_backward_under_npu_autocast(tmp_path, extension):
    run_emulated(tmp_path, """
        import torchvision
        torch.manual_seed(0)
        model = torchvision.models.resnet50().npu()
        x = torch.randn(1, 3, 64, 64, device="npu")
        with torch.autocast("npu", dtype=torch.float16):
            out = model(x)
        assert out.dtype == torch.float16 and out.shape == (1, 1000)
        # seeded, and the mean, not the sum: without a grad scaler, an unseeded run's sum once overflowed float16
        # in the backward (a cell run of 2026-12-02: a gradient not finite)
        out.float().mean().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and g.device.type == "npu" and torch.isfinite(g).all() for g in grads)
        """, extension, timeout=600)


def test_pinned_memory_for_the_npu(tmp_path, extension):
    run_emulated(tmp_path, """
        t = torch.randn(16)
        assert not t.is_pinned()
        p = t.pin_memory()                       # torch 2.1 would send this to CUDA
        assert p.is_pinned() and p.device.type == "cpu" and torch.equal(p, t)
        assert p.npu(non_blocking=True).device.type == "npu"
        data = torch.utils.data.TensorDataset(torch.randn(8, 3))
        for kwargs in ({"pin_memory_device": "npu"}, {}):
            if not kwargs:
                from torch_npu.contrib import transfer_to_npu  # noqa: F401  (torch.cuda -> npu)
            loader = torch.utils.data.DataLoader(data, batch_size=4, pin_memory=True, **kwargs)
            assert all(batch.is_pinned() for (batch,) in loader), kwargs
        """, extension)


def test_transfer_to_npu_sends_cuda_code_to_the_npu(tmp_path, extension):
    run_emulated(tmp_path, """
        from torch_npu.contrib import transfer_to_npu  # noqa: F401
        assert torch.cuda.is_available() and torch.cuda.device_count() == 8
        assert torch.ones(2).cuda().device.type == "npu"
        assert torch.zeros(2, device="cuda:1").device == torch.device("npu:1")
        assert torch.ones(1).to("cuda").is_cuda and torch.ones(1).to(torch.device("cuda", 2)).device.index == 2
        model = torch.nn.Linear(2, 2).cuda()
        assert next(model.parameters()).device.type == "npu"
        torch.cuda.set_device(1)
        assert torch.npu.current_device() == 1 and torch.cuda.current_device() == 1
        assert torch.ones(1, device="cuda").device == torch.device("npu:1")  # "cuda" is the current npu
        torch.cuda.set_device(0)
        torch.cuda.synchronize()
        assert torch.cuda.max_memory_allocated() >= 0
        with torch.autocast("cuda", dtype=torch.float16):
            assert model(torch.ones(1, 2, device="cuda")).dtype == torch.float16
        # mmcv.parallel's scatter: a copy on a side stream, waited for, the tensor recorded on the main one
        side = torch.cuda.Stream(0)
        with torch.cuda.device(0), torch.cuda.stream(side):
            moved = torch.ones(3).pin_memory().cuda(0, non_blocking=True)
            assert torch.cuda.current_stream() is side
        main = torch.cuda.current_stream()
        main.wait_stream(side)
        moved.record_stream(main)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        moved.sum()
        end.record()
        end.synchronize()
        assert start.elapsed_time(end) >= 0 and torch.equal(moved.cpu(), torch.ones(3))
        try:
            torch_npu.npu_rotary_mul(moved, moved, moved)
        except NotImplementedError as e:
            assert "torch_npu.npu_rotary_mul is not emulated" in str(e)
        """, extension)


def test_npu_fused_adamw_follows_adamw(tmp_path, extension):
    run_emulated(tmp_path, """
        import inspect
        from torch_npu.optim import NpuFusedAdamW
        assert list(inspect.signature(NpuFusedAdamW).parameters) == [
            "params", "lr", "betas", "eps", "weight_decay", "amsgrad"]
        torch.manual_seed(0)
        w = torch.randn(5, 3)
        runs = []
        for cls, device in ((torch.optim.AdamW, "cpu"), (NpuFusedAdamW, "npu")):
            p = torch.nn.Parameter(w.clone().to(device))
            opt = cls([p], lr=0.1, weight_decay=0.05)
            for _ in range(3):
                opt.zero_grad()
                (p * p).sum().backward()
                opt.step()
            runs.append(p.detach().cpu())
        torch.testing.assert_close(runs[0], runs[1])
        """, extension)


DIST_SCRIPT = """
import sys
import torch.distributed as dist
rank, world, port, backend, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
device = torch.device("npu", rank) if backend == "hccl" else torch.device("cpu")
if backend == "hccl":
    torch.npu.set_device(rank)
dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
t = torch.full((4,), float(rank + 1), device=device)
dist.all_reduce(t)
b = torch.full((3,), float(rank), device=device)
dist.broadcast(b, src=1)
parts = [torch.zeros(2, device=device) for _ in range(world)]
dist.all_gather(parts, torch.full((2,), float(rank), device=device))
dist.barrier()
extra = {}
if backend == "hccl":  # HCCL's own: futures hold the npu tensors; flat all-gather and reduce-scatter
    future = dist.all_reduce(torch.ones(2, device=device), async_op=True).get_future()
    extra["future_device"] = str(future.wait()[0].device)
    scattered = torch.zeros(2, device=device)
    dist.reduce_scatter_tensor(scattered, torch.arange(4.0, device=device) * (rank + 1))
    extra["reduce_scatter"] = scattered.cpu()
    full = torch.zeros(4, device=device)
    dist.all_gather_into_tensor(full, torch.full((2,), float(rank), device=device))
    extra["all_gather_into_tensor"] = full.cpu()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                          torch.nn.Linear(4 * 6 * 6, 2)).to(device)
ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=[rank] if backend == "hccl" else None)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
for step in range(3):
    torch.manual_seed(100 * step + rank)  # each rank its own batch
    x = torch.randn(2, 3, 8, 8).to(device)
    opt.zero_grad()
    ddp(x).square().sum().backward()
    opt.step()
torch.save({"all_reduce": t.cpu(), "broadcast": b.cpu(), "all_gather": torch.stack(parts).cpu(),
            "devices": [str(p.device) for p in net.parameters()][:1], **extra,
            "weights": {k: v.cpu() for k, v in net.state_dict().items()}}, out)
dist.destroy_process_group()
"""


def run_ranks(tmp_path: Path, extension: Path, backend: str, world: int = 2, script_text: str = DIST_SCRIPT) -> list:
    script = tmp_path / f"dist_{backend}.py"
    script.write_text(PRELUDE + script_text)
    port = free_port()
    outs = [tmp_path / f"{backend}_{rank}.pt" for rank in range(world)]
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(world), str(port), backend, str(out)],
                              env=child_env(extension, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                                            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank, out in enumerate(outs)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"{backend} rank exited {p.returncode}:\n{log[-4000:]}"
    return [torch.load(out) for out in outs]


def test_hccl_collectives_and_ddp_match_gloo_on_the_cpu(tmp_path, extension):
    hccl = run_ranks(tmp_path, extension, "hccl")
    gloo = run_ranks(tmp_path, extension, "gloo")
    for rank, result in enumerate(hccl):
        assert result["devices"] == [f"npu:{rank}"]
        assert torch.equal(result["all_reduce"], torch.full((4,), 3.0))
        assert torch.equal(result["broadcast"], torch.full((3,), 1.0))
        assert torch.equal(result["all_gather"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        assert result["future_device"] == f"npu:{rank}"
        assert torch.equal(result["reduce_scatter"], torch.arange(4.0).mul(3).view(2, 2)[rank])
        assert torch.equal(result["all_gather_into_tensor"], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    for name, weight in hccl[0]["weights"].items():
        if "running" not in name and "num_batches" not in name:  # batch-norm statistics are per rank
            torch.testing.assert_close(weight, hccl[1]["weights"][name])  # DDP kept the ranks in step
    for rank in range(2):  # and did, rank by rank, what gloo DDP does on the CPU
        for name, weight in hccl[rank]["weights"].items():
            torch.testing.assert_close(weight, gloo[rank]["weights"][name])
    assert gloo[0]["devices"] == ["cpu"]


MMCV_SCRIPT = """
import sys
from mmcv.device.npu import NPUDistributedDataParallel
from mmcv.runner import init_dist
from mmcv.utils import IS_NPU_AVAILABLE
rank, out = int(sys.argv[1]), sys.argv[5]
assert IS_NPU_AVAILABLE
init_dist("pytorch")  # mmcv picks hccl and the device rank % device_count on an NPU
assert torch.distributed.get_backend() == "hccl" and torch.npu.current_device() == rank


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 1, bias=False)
        torch.nn.init.constant_(self.fc.weight, 1.0)

    def train_step(self, data, optimizer):
        return {"loss": self.fc(data["x"]).sum(), "device": str(data["x"].device)}


model = NPUDistributedDataParallel(Net().npu(), device_ids=[torch.npu.current_device()])
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
result = model.train_step({"x": torch.full((2, 3), float(rank + 1))}, optimizer)
result["loss"].backward()
optimizer.step()
torch.save({"device": result["device"], "weight": model.module.fc.weight.detach().cpu()}, out)
"""


def test_mmcv_init_dist_and_npu_ddp_over_hccl(tmp_path, extension):
    pytest.importorskip("mmcv", reason="needs mmcv: run the suite in the kit's environment")
    results = run_ranks(tmp_path, extension, "hccl", script_text=MMCV_SCRIPT)
    assert [r["device"] for r in results] == ["npu:0", "npu:1"]  # mmcv scattered the batch to each rank's npu
    # gradients 2*(1, 1, 1) on rank 0 and 2*(2, 2, 2) on rank 1, averaged: 3 each; one SGD step of 0.1
    for r in results:
        torch.testing.assert_close(r["weight"], torch.full((1, 3), 1.0 - 0.3))


def point_loop_bev_pool(depth, feat, ranks_depth, ranks_feat, ranks_bev, shape):
    """The contract, one point at a time, in float64 on the CPU."""
    B, D, H, W, C = shape
    out = torch.zeros(B * D * H * W, C, dtype=torch.float64)
    feat_rows = feat.reshape(-1, C).double()
    for i in range(ranks_bev.shape[0]):
        out[ranks_bev[i]] += depth.reshape(-1)[ranks_depth[i]].double() * feat_rows[ranks_feat[i]]
    return out.view(B, D, H, W, C).permute(0, 4, 1, 2, 3)


def test_the_real_bev_pool_v3_wrapper_runs_on_the_emulated_kernel(tmp_path, extension, mx_driving_dir):
    data = tmp_path / "bev.pt"
    torch.manual_seed(0)
    B, N, D, fH, fW, C = 1, 2, 4, 3, 5, 16
    shape = (B, 2, 4, 6, C)
    n = 300
    tensors = {"depth": torch.rand(B, N, D, fH, fW), "feat": torch.rand(B, N, fH, fW, C),
               "ranks_depth": torch.randint(0, B * N * D * fH * fW, (n,), dtype=torch.int32),
               "ranks_feat": torch.randint(0, B * N * fH * fW, (n,), dtype=torch.int32),
               "ranks_bev": torch.randint(0, B * 2 * 4 * 6, (n,), dtype=torch.int32),
               "grad": torch.rand(B, C, 2, 4, 6)}
    torch.save(tensors, data)
    out = run_emulated(tmp_path, """
        import sys
        import mx_driving
        from npu_emulator import kernels
        assert mx_driving.__file__.startswith(sys.argv[2]), mx_driving.__file__  # the wheel's own code
        t = torch.load(sys.argv[1])
        depth = t["depth"].npu().requires_grad_()
        feat = t["feat"].npu().requires_grad_()
        out = mx_driving.bev_pool_v3(depth, feat, t["ranks_depth"].npu(), t["ranks_feat"].npu(),
                                     t["ranks_bev"].npu(), [1, 2, 4, 6, 16])
        out.backward(t["grad"].npu())
        torch.save({"out": out.detach().cpu(), "depth": depth.grad.cpu(), "feat": feat.grad.cpu(),
                    "device": str(out.device), "calls": dict(kernels.CALLS)}, sys.argv[1] + ".out")
        for bad_c in (12, 368):  # DrivingSDK's limits: C a multiple of 8, at most 360
            f = torch.rand(1, 2, 3, 5, bad_c).npu()
            try:
                mx_driving.bev_pool_v3(depth.detach(), f, t["ranks_depth"].npu(), t["ranks_feat"].npu(),
                                       t["ranks_bev"].npu(), [1, 2, 4, 6, bad_c])
            except RuntimeError as e:
                print("LIMIT", e)
        try:
            mx_driving.bev_pool_v3(depth.detach(), feat.detach(), t["ranks_depth"].long().npu(),
                                   t["ranks_feat"].npu(), t["ranks_bev"].npu(), [1, 2, 4, 6, 16])
        except RuntimeError as e:
            print("DTYPE", e)
        """, extension, mx_driving_dir, args=(data, mx_driving_dir))
    result = torch.load(str(data) + ".out")
    assert result["calls"] == {"npu_bev_pool_v3": 1, "npu_bev_pool_v3_backward": 1}
    assert result["device"] == "npu:0"
    depth = tensors["depth"].double().requires_grad_()
    feat = tensors["feat"].double().requires_grad_()
    expected = point_loop_bev_pool(depth, feat, tensors["ranks_depth"], tensors["ranks_feat"],
                                   tensors["ranks_bev"], shape)
    expected.backward(tensors["grad"].double())
    torch.testing.assert_close(result["out"], expected.float())
    torch.testing.assert_close(result["depth"], depth.grad.float())
    torch.testing.assert_close(result["feat"], feat.grad.float())
    assert out.count("LIMIT") == 2 and "multiple of 8 and at most 360, got C=12" in out
    assert "got C=368" in out and "ranks_depth must be int32, got int64" in out


def test_bev_pool_v1_mode_and_the_interval_kernels(tmp_path, extension, mx_driving_dir):
    run_emulated(tmp_path, """
        import mx_driving
        from npu_emulator import kernels
        torch.manual_seed(0)
        B, D, H, W, C = 2, 1, 4, 5, 8
        feat = torch.rand(30, C)
        geom = torch.stack([torch.randint(0, H, (30,)), torch.randint(0, W, (30,)), torch.randint(0, D, (30,)),
                            torch.randint(0, B, (30,))], 1).int()
        expected = torch.zeros(B, D, H, W, C)
        for i in range(30):
            h, w, d, b = geom[i].tolist()
            expected[b, d, h, w] += feat[i]
        expected = expected.permute(0, 4, 1, 2, 3)
        v3 = mx_driving.bev_pool_v3(None, feat.npu(), None, None, geom.npu(), [B, D, H, W, C])
        v1 = mx_driving.bev_pool(feat.npu().requires_grad_(), geom.npu(), B, D, H, W)
        torch.testing.assert_close(v3.cpu(), expected)
        torch.testing.assert_close(v1.detach().cpu(), expected)
        v1.sum().backward()
        # DrivingSDK's own v1-mode test: feat (B, C, H, W, D), C = feat.size(1), point i adds row i of
        # feat.view(-1, C) (more rows than points)
        big = torch.rand(B, C, H, W, 3).npu().requires_grad_()
        v3_rows = mx_driving.bev_pool_v3(None, big, None, None, geom.npu(), [B, D, H, W, C])
        rows = big.detach().cpu().reshape(-1, C)[:30]
        expected_rows = torch.zeros(B, D, H, W, C)
        for i in range(30):
            h, w, d, b = geom[i].tolist()
            expected_rows[b, d, h, w] += rows[i]
        torch.testing.assert_close(v3_rows.detach().cpu(), expected_rows.permute(0, 4, 1, 2, 3))
        v3_rows.sum().backward()
        grad = big.grad.cpu().reshape(-1, C)
        assert torch.equal(grad[:30], torch.ones(30, C)) and not grad[30:].any()
        assert kernels.CALLS["npu_bev_pool_v3"] == 2 and kernels.CALLS["npu_bev_pool"] == 1
        assert kernels.CALLS["npu_bev_pool_backward"] == 1
        """, extension, mx_driving_dir)


def test_npu_add_relu_through_the_wheel(tmp_path, extension, mx_driving_dir):
    run_emulated(tmp_path, """
        import mx_driving
        from npu_emulator import kernels
        torch.manual_seed(0)
        x = torch.randn(2_000_000).npu().requires_grad_()  # DrivingSDK uses its kernel from 2M elements on
        y = torch.randn(2_000_000).npu()
        out = mx_driving.npu_add_relu(x, y)
        assert kernels.CALLS["npu_add_relu"] == 1 and out.device.type == "npu"
        torch.testing.assert_close(out.detach().cpu(), torch.relu(x.detach().cpu() + y.cpu()))
        out.sum().backward()
        torch.testing.assert_close(x.grad.cpu(), (x.detach().cpu() + y.cpu() > 0).float())
        small = mx_driving.npu_add_relu(torch.ones(4).npu(), torch.ones(4).npu())
        assert kernels.CALLS["npu_add_relu"] == 1 and small.device.type == "npu"  # below 2M: plain torch
        """, extension, mx_driving_dir)


def test_an_unemulated_kernel_raises_with_its_name_and_the_import_is_quiet(tmp_path, extension, mx_driving_dir):
    script = tmp_path / "quiet.py"
    script.write_text(PRELUDE + textwrap.dedent("""
        import mx_driving
        from mx_driving.patcher import BatchMatmul, Patcher, ResNetAddRelu  # noqa: F401
        try:
            mx_driving.hypot(torch.ones(2).npu(), torch.ones(2).npu())
        except RuntimeError as e:
            print("RAISED", e)
        """))
    proc = subprocess.run([sys.executable, "-W", "always", str(script)], capture_output=True, text=True,
                          timeout=300, env=child_env(extension, mx_driving_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RAISED mx_driving._C.npu_hypot is not emulated by the kit's NPU rehearsal" in proc.stdout
    assert "Failed to get chip version" not in proc.stderr  # the stub libdrvdsmi_host.so answers
    assert "LD_LIBRARY_PATH" not in proc.stderr


def test_the_pth_hook_emulates_only_when_asked(tmp_path, extension):
    site = tmp_path / "site"
    site.mkdir()
    pth, settings = install.write_hook(extension, None, site=site)
    assert json.loads(settings.read_text())["extension"] == str(extension)
    code = ("import site, sys; site.addsitedir(sys.argv[1]); import torch_npu, torch; "
            "print(torch.ones(1).npu().device)")
    env = {k: v for k, v in os.environ.items() if k not in (ENV_FLAG, ENV_EXTENSION, ENV_MX_DRIVING, "PYTHONPATH")}
    off = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, env=env)
    assert off.returncode != 0 and "ModuleNotFoundError: No module named 'torch_npu'" in off.stderr
    on = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True,
                        env={**env, ENV_FLAG: "1"})
    assert on.returncode == 0, on.stderr[-3000:]
    assert on.stdout.strip() == "npu:0"
    # a hook written for an older build of the sources takes the present build from the same cache
    install.write_hook(extension.parent.parent / "0123456789abcdef-old" / extension.name, None, site=site)
    which = ("import os, site, sys; site.addsitedir(sys.argv[1]); "
             f"print(os.environ[{ENV_EXTENSION!r}])")
    newer = subprocess.run([sys.executable, "-c", which, str(site)], capture_output=True, text=True,
                           env={**env, ENV_FLAG: "1"})
    assert newer.returncode == 0 and newer.stdout.strip() == str(extension), newer.stderr[-2000:]


def test_prepare_reuses_its_build_in_well_under_a_second(tmp_path, extension):
    site = tmp_path / "site"
    site.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (ENV_FLAG, ENV_EXTENSION)}
    env["PYTHONPATH"] = str(TOOLS)
    proc = subprocess.run([sys.executable, "-m", "npu_emulator.install", "--no-mx-driving", "--json",
                           "--cache-dir", str(install.default_cache_dir()), "--site-dir", str(site)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prepared = json.loads(proc.stdout.strip().splitlines()[-1])
    assert prepared["extension"] == str(extension)  # the session's build, found by its key
    assert prepared["seconds"]["extension"] < 1.0
    assert (site / install.PTH_NAME).read_text().splitlines()[0] == str(TOOLS)


def test_flashocc_r50_trains_a_step_on_the_emulated_npu_through_drivingsdk(tmp_path, extension, mx_driving_dir,
                                                                            flashocc_root):
    out = run_emulated(tmp_path, """
        import importlib.util
        import os
        import sys
        root = sys.argv[1]
        sys.path.insert(0, root)
        import projects.mmdet3d_plugin  # noqa: F401
        from mmcv import Config
        from mmdet3d.models import build_model
        from npu_emulator import kernels
        from projects import device
        assert device.device_type() == "npu"
        print(device.apply_driving_sdk_patches("fp32").splitlines()[-1])
        spec = importlib.util.spec_from_file_location("parity", os.path.join(root, "tools", "bev_pool_parity.py"))
        parity = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(parity)
        cfg = Config.fromfile(os.path.join(root, "projects/configs/flashocc/flashocc-r50.py"))
        cfg.model.img_backbone.pretrained = None
        torch.manual_seed(0)
        model = build_model(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
        model.init_weights()
        model = model.train().npu()
        g = torch.Generator().manual_seed(0)
        rig = parity.rig(1, g)
        img_inputs = [t.npu() for t in [torch.randn(1, 6, 3, 256, 704, generator=g), rig[0],
                                        torch.eye(4).repeat(1, 6, 1, 1), *rig[2:]]]
        semantics = torch.randint(0, 18, (1, 200, 200, 16), generator=g).npu()
        mask = (torch.rand(1, 200, 200, 16, generator=g) > 0.3).to(torch.uint8).npu()
        losses = model.forward_train(img_inputs=img_inputs, img_metas=[{}], voxel_semantics=semantics,
                                     mask_camera=mask)
        loss = sum(losses.values())
        loss.backward()
        assert loss.device.type == "npu" and torch.isfinite(loss)
        assert model.img_backbone.conv1.weight.grad.abs().sum() > 0
        print("CALLS", dict(kernels.CALLS))
        """, extension, mx_driving_dir, args=(flashocc_root,), timeout=900, FLASHOCC_DEVICE="npu")
    assert "applied batch_matmul, resnet_add_relu" in out
    calls = ast.literal_eval(out.split("CALLS", 1)[1].strip().splitlines()[0])
    assert calls["npu_bev_pool_v3"] == 1 and calls["npu_bev_pool_v3_backward"] == 1
    assert calls["npu_add_relu"] > 0  # DrivingSDK's ResNet patch reached its fused kernel
