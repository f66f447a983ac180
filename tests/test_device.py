"""The device module and the NPU routing (from flashocc.patch), on the kit's emulated Ascend NPU.

Each scenario runs in a fresh interpreter (choosing the NPU patches torch.cuda and mmcv's registry: nothing this
test process may keep). The NPU scenarios run with ``FLASHOCC_EMULATE_NPU=1``: torch_npu is the kit's emulated one
(tools/npu_emulator), mx_driving is DrivingSDK's real wheel with only its compiled ``_C`` emulated, and the kernel
calls a scenario reaches are counted (``npu_emulator.kernels.CALLS``). No stand-in package is on their path.

Stand-ins stay only where no real wheel can show the behaviour: DrivingSDK's legacy ``PatcherBuilder`` API (see
LEGACY_PATCHER). Where the emulator is not prepared (``kit.py setup`` prepares it) the NPU tests skip, saying so;
``--require-sources`` counts that as a failure.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from conftest import PORT_FLASHOCC, free_port

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")

EMULATE = "FLASHOCC_EMULATE_NPU"
PROBE = """
import torch, torch_npu, mx_driving, npu_emulator.kernels
assert torch.ones(1).npu().device.type == "npu"
print(torch_npu.__version__, mx_driving.__file__)
"""
# What a scenario hands back: its `result`, and the DrivingSDK kernels (mx_driving._C) it reached.
EPILOGUE = """
import json as _json, sys as _sys
_kernels = _sys.modules.get("npu_emulator.kernels")
print("RESULT " + _json.dumps({"result": result, "kernels": dict(_kernels.CALLS) if _kernels else {}}))
"""


def child_env(npu: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the kit's switches (FLASHOCC_DEVICE, FLASHOCC_BEV_POOL, an emulation of the caller's),
    with the emulated NPU on or off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHOCC_")}
    if npu:
        env[EMULATE] = "1"
    return {**env, **(extra or {})}


@functools.lru_cache(maxsize=None)
def emulator_unprepared() -> str | None:
    """Why this environment cannot emulate the NPU with the real DrivingSDK wheel, or None when it can."""
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                           env=child_env(npu=True))
    if probe.returncode == 0 and "+emulated" in probe.stdout:
        return None
    return ("the emulated NPU is not prepared in this environment: `python3 tools/kit.py setup` prepares it "
            f"(probe: {(probe.stderr or probe.stdout).strip().splitlines()[-1:]})")


def require_emulated_npu() -> None:
    reason = emulator_unprepared()
    if reason:
        pytest.skip(reason)


def run_child(tmp_path: Path, code: str, paths: list[str], npu: bool, env: dict[str, str] | None = None,
              timeout: int = 600) -> tuple[object, dict[str, int]]:
    """Runs code (which sets `result`) in a fresh interpreter with paths on PYTHONPATH; returns (result, kernels)."""
    if npu:
        require_emulated_npu()
    script = tmp_path / f"scenario_{len(list(tmp_path.glob('scenario_*.py')))}.py"
    script.write_text("import json\n" + textwrap.dedent(code) + EPILOGUE)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=timeout, env=child_env(npu, {"PYTHONPATH": os.pathsep.join(paths), **(env or {})}))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    found = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    return found["result"], found["kernels"]


@pytest.fixture
def run_scenario(tmp_path: Path) -> Callable[..., tuple[object, dict[str, int]]]:
    """Run a snippet that sets `result` against the port's modules, on the emulated NPU (npu=True) or on a plain
    CPU; returns (result, the mx_driving._C kernel calls it reached)."""

    def run(code: str, npu: bool = True, env: dict[str, str] | None = None) -> tuple[object, dict[str, int]]:
        return run_child(tmp_path, code, [str(PORT_FLASHOCC)], npu, env)

    return run


def test_npu_is_chosen_with_hccl_and_transfer_to_npu_applied_once(run_scenario):
    """The port itself applies transfer_to_npu (importing torch_npu does not), once, and upstream's CUDA code then
    lands on the NPU."""
    result, kernels = run_scenario("""
        import torch

        def wrappers(fn):  # how many functools.wraps layers a function has
            return 0 if not hasattr(fn, '__wrapped__') else 1 + wrappers(fn.__wrapped__)

        cuda_current_device = torch.cuda.current_device
        init_layers = wrappers(torch.distributed.init_process_group)
        from projects import device
        chosen = [device.device_type(), device.dist_backend(), device.device_type()]
        import torch_npu
        try:
            lands_on = str(torch.zeros(1, device='cuda').device)
        except Exception as exc:  # torch's CUDA, not redirected
            lands_on = f'{type(exc).__name__}: {exc}'[:100]
        result = {
            'chosen': chosen,
            'cuda redirected': torch.cuda.current_device is torch.npu.current_device is not cuda_current_device,
            'Tensor.cuda is Tensor.npu': torch.Tensor.cuda is torch.Tensor.npu,
            'init_process_group wrapped': wrappers(torch.distributed.init_process_group) - init_layers,
            'cuda tensor lands on': lands_on,
        }
    """)
    assert result == {"chosen": ["npu", "hccl", "npu"], "cuda redirected": True, "Tensor.cuda is Tensor.npu": True,
                      "init_process_group wrapped": 1,  # transfer_to_npu's nccl -> hccl, applied exactly once
                      "cuda tensor lands on": "npu:0"}
    assert kernels == {}


# mmcv registers torch_npu's optimizers only when it saw an NPU at import ("hidden": torch_npu not importable while
# mmcv is imported, as where mmcv was imported before the NPU was usable), so the port registers the one it uses;
# where mmcv did see the NPU ("seen") the port must leave its registration alone.
OPTIMIZER_SCENARIO = """
    import sys
    import torch
    if HIDE_NPU_FROM_MMCV:
        sys.modules['torch_npu'] = None  # mmcv's is_npu_available() fails: no NPU optimizers registered
    from mmcv.runner.optimizer import OPTIMIZERS, build_optimizer
    if HIDE_NPU_FROM_MMCV:
        del sys.modules['torch_npu']  # importable again from here on
    before = OPTIMIZERS.get('NpuFusedAdamW')
    from projects import device
    import torch_npu
    cfg = dict(type='AdamW', lr=2e-4, weight_decay=1e-2)
    message = device.adapt_optimizer(cfg)
    model = torch.nn.Linear(4, 2).cuda()  # transfer_to_npu: on the NPU
    optimizer = build_optimizer(model, dict(cfg))
    weight = model.weight.detach().clone()
    model(torch.ones(3, 4).cuda()).sum().backward()
    optimizer.step()
    result = {
        'cfg': cfg, 'message': message, 'registered before': before is not None,
        'registered': OPTIMIZERS.get('NpuFusedAdamW') is torch_npu.optim.NpuFusedAdamW,
        'built': [type(optimizer).__module__ + '.' + type(optimizer).__name__, optimizer.defaults['lr'],
                  optimizer.defaults['weight_decay']],
        'stepped on': str(model.weight.device) if not torch.equal(weight, model.weight.detach()) else None,
    }
"""


@pytest.mark.parametrize("mmcv_saw_the_npu", [False, True], ids=["mmcv-imported-without-npu", "mmcv-saw-the-npu"])
def test_npu_optimizer_is_the_fused_adamw_registered_into_mmcv_by_the_port(run_scenario, mmcv_saw_the_npu):
    pytest.importorskip("mmcv", reason="needs mmcv: run the suite in the kit's environment")
    result, _ = run_scenario(OPTIMIZER_SCENARIO.replace("HIDE_NPU_FROM_MMCV", str(not mmcv_saw_the_npu)))
    assert result == {
        "cfg": {"type": "NpuFusedAdamW", "lr": 2e-4, "weight_decay": 1e-2},
        "message": "optimizer AdamW -> torch_npu NpuFusedAdamW (same hyper-parameters)",
        "registered before": mmcv_saw_the_npu, "registered": True,
        "built": ["torch_npu.optim.NpuFusedAdamW", 2e-4, 1e-2], "stepped on": "npu:0",
    }


# A ResNet-50 forward on the NPU before and after the port applies DrivingSDK's patches. mx_driving.npu_add_relu is
# observed (wrapped, still called): the ResNet patch calls it at the end of each of the 16 bottlenecks. The wheel
# sends only tensors of 2e6 elements and more to its kernel: at batch 2 x 256 x 256 that is stage 1's three.
RESNET_SCENARIO = """
    import torch
    import mx_driving
    from mmdet.models.backbones import ResNet, resnet
    from projects import device
    PRELUDE
    add_relu_calls = []
    real_add_relu = mx_driving.npu_add_relu
    def npu_add_relu(x, y):
        add_relu_calls.append(x.numel())
        return real_add_relu(x, y)
    mx_driving.npu_add_relu = npu_add_relu
    originals = {'torch.matmul': torch.matmul, 'Bottleneck.forward': resnet.Bottleneck.forward,
                 'BasicBlock.forward': resnet.BasicBlock.forward, 'ResNet.forward': resnet.ResNet.forward}
    torch.manual_seed(0)
    net = ResNet(depth=50, out_indices=(0, 1, 2, 3)).npu()
    net.eval()  # (mmdet's ResNet.train returns None, so .eval() does too)
    x = torch.rand(SIZE).npu()
    with torch.no_grad():
        before = net(x)
        line = device.apply_driving_sdk_patches(PRECISION)
        after = net(x)
    now = {'torch.matmul': torch.matmul, 'Bottleneck.forward': resnet.Bottleneck.forward,
           'BasicBlock.forward': resnet.BasicBlock.forward, 'ResNet.forward': resnet.ResNet.forward}
    result = {
        'line': line, 'add_relu calls': len(add_relu_calls),
        'same outputs': all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, after)),
        'on': sorted({str(t.device) for t in after}),
        # what the patches replaced, and by what module's function
        'replaced': {name: getattr(fn, '__module__', None) for name, fn in now.items() if fn is not originals[name]},
        'recorded': getattr(mx_driving.patcher, 'RECORDED', None),
    }
"""


def resnet_scenario(precision: str, size: tuple[int, ...], prelude: str = "") -> str:
    return (RESNET_SCENARIO.replace("PRECISION", repr(precision)).replace("SIZE", repr(size))
            .replace("    PRELUDE\n", textwrap.indent(textwrap.dedent(prelude), "    ")))


def test_drivingsdk_patcher_applies_batch_matmul_and_resnet_add_relu(run_scenario):
    """DrivingSDK's real Patcher (the 26.x wheels' API): the 16 bottlenecks end in mx_driving.npu_add_relu, its kernel
    reached for the big ones, the outputs unchanged."""
    pytest.importorskip("mmdet", reason="needs mmdet: run the suite in the kit's environment")
    result, kernels = run_scenario(resnet_scenario("fp32", (2, 3, 256, 256)))
    assert result == {
        "line": "DrivingSDK patches (Patcher API, fp32): applied batch_matmul, resnet_add_relu",
        "add_relu calls": 16, "same outputs": True, "on": ["npu:0"],
        "replaced": {"torch.matmul": "mx_driving.patcher.torch_patch",  # BatchMatmul
                     "Bottleneck.forward": "mx_driving.patcher.mmdet_patch",  # ResNetAddRelu
                     "BasicBlock.forward": "mx_driving.patcher.mmdet_patch"},
        "recorded": None,
    }
    assert kernels == {"npu_add_relu": 3}  # stage 1's 2 x 256 x 64 x 64 outputs


def test_the_fp16_backbone_gets_batch_matmul_only_and_keeps_the_ports_autocast(run_scenario):
    """No add+relu fusion, no DrivingSDK resnet_fp16 (the port's autocast takes its place): ResNet's forwards stay."""
    pytest.importorskip("mmdet", reason="needs mmdet: run the suite in the kit's environment")
    result, kernels = run_scenario(resnet_scenario("fp16-backbone", (1, 3, 64, 64)))
    assert result["line"] == "DrivingSDK patches (Patcher API, fp16-backbone): applied batch_matmul"
    assert result["replaced"] == {"torch.matmul": "mx_driving.patcher.torch_patch"}  # not ResNet's forwards
    assert result["add_relu calls"] == 0 and result["same outputs"] and kernels == {}


def test_a_patch_that_changes_nothing_is_logged_as_skipped_with_the_reason(run_scenario):
    """The real Patcher given a ResNetAddRelu whose patch list is empty (a patch class that does nothing)."""
    pytest.importorskip("mmdet", reason="needs mmdet: run the suite in the kit's environment")
    result, _ = run_scenario("""
        import mx_driving.patcher as patcher
        patcher.ResNetAddRelu.patches = classmethod(lambda cls, options=None: [])  # patches nothing
        from projects import device
        result = device.apply_driving_sdk_patches()
    """)
    assert result == ("DrivingSDK patches (Patcher API, fp32): applied batch_matmul; skipped resnet_add_relu (the "
                      "patcher left mmdet.models.backbones.resnet.BasicBlock.forward, "
                      "mmdet.models.backbones.resnet.Bottleneck.forward unchanged)")


# DrivingSDK's first patcher API, PatcherBuilder (2025-02 to 2026-03; the reference port trains under it), is in no
# wheel on PyPI: the 26.x wheels have the Patcher API, and their PatcherBuilder is a compatibility layer over it that
# cannot tell entering the context from calling .apply(). So, and only for these two variants, a stand-in of
# mx_driving.patcher is loaded over the real wheel, on the emulated NPU (torch_npu, mx_driving's ops and kernels stay
# real): "builder" (its ResNet patch takes the mmdet package) and "builder-old" (up to 2025-09: it takes mmdet's resnet
# module, and mx_driving.patcher.mmdet exists). Its patches really patch; it records how the port drives it.
LEGACY_PATCHER = """
import importlib
import mx_driving
LAYOUT = LAYOUT_NAME
RECORDED = []

def batch_matmul(module, options):
    original = module.matmul
    def matmul(a, b):
        return original(a, b)
    module.matmul = matmul

def resnet_add_relu(module, options):
    wanted = 'mmdet.models.backbones.resnet' if LAYOUT == 'builder-old' else 'mmdet'
    if module.__name__ != wanted:
        raise AttributeError(f'{LAYOUT} resnet_add_relu takes {wanted}, got {module.__name__}')
    resnet = importlib.import_module('mmdet.models.backbones.resnet')
    def bottleneck_forward(self, x):
        identity = x
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return mx_driving.npu_add_relu(out, identity)
    def basicblock_forward(self, x):
        identity = x
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return mx_driving.npu_add_relu(out, identity)
    resnet.Bottleneck.forward = bottleneck_forward
    resnet.BasicBlock.forward = basicblock_forward

class Patch:
    def __init__(self, func):
        self.func = func

class _Built:
    def __init__(self, patches):
        self.patches = patches
    def apply(self):
        RECORDED.append('apply() called (skips the context setup of the 1.x patcher)')
    def __enter__(self):
        RECORDED.append({'__enter__': [[m, p.func.__name__] for m, p in self.patches]})
        for module, patch in self.patches:
            patch.func(importlib.import_module(module), {})
        return self
    def __exit__(self, *args):
        pass

class PatcherBuilder:
    def __init__(self):
        self.patches = []
    def add_module_patch(self, module_name, *patches):
        self.patches += [(module_name, p) for p in patches]
        return self
    def build(self):
        return _Built(self.patches)
"""
INSTALL_LEGACY_PATCHER = """
    import importlib.util, sys
    _spec = importlib.util.spec_from_file_location('mx_driving.patcher', STANDIN + '/__init__.py',
                                                   submodule_search_locations=[STANDIN])
    _standin = importlib.util.module_from_spec(_spec)
    sys.modules['mx_driving.patcher'] = mx_driving.patcher = _standin
    _spec.loader.exec_module(_standin)
"""


@pytest.mark.parametrize("api", ["builder", "builder-old"])
def test_the_legacy_patcher_builder_api_is_entered_as_a_context(run_scenario, tmp_path, api):
    pytest.importorskip("mmdet", reason="needs mmdet: run the suite in the kit's environment")
    standin = tmp_path / "legacy_patcher" / api
    standin.mkdir(parents=True)
    (standin / "__init__.py").write_text(LEGACY_PATCHER.replace("LAYOUT_NAME", repr(api)))
    if api == "builder-old":
        (standin / "mmdet.py").write_text("")  # mx_driving.patcher.mmdet: how the port tells the old layout
    prelude = INSTALL_LEGACY_PATCHER.replace("STANDIN", repr(str(standin)))
    result, kernels = run_scenario(resnet_scenario("fp32", (1, 3, 64, 64), prelude))
    module = "mmdet.models.backbones.resnet" if api == "builder-old" else "mmdet"
    assert result == {
        "line": "DrivingSDK patches (PatcherBuilder API, fp32): applied batch_matmul, resnet_add_relu",
        "add_relu calls": 16, "same outputs": True, "on": ["npu:0"],
        "replaced": dict.fromkeys(["torch.matmul", "Bottleneck.forward", "BasicBlock.forward"], "mx_driving.patcher"),
        "recorded": [{"__enter__": [["torch", "batch_matmul"], [module, "resnet_add_relu"]]}],  # no .apply()
    }
    assert kernels == {}  # 64 x 64 inputs: every add+relu below the wheel's 2e6-element kernel threshold


def test_local_device_and_process_group_follow_local_rank(run_scenario):
    """LOCAL_RANK, not RANK % device count (mmcv's), picks the NPU; the group is a real hccl one over it."""
    result, _ = run_scenario("""
        import torch
        import torch.distributed as dist
        from projects import device
        device.init_distributed()
        reduced = torch.ones(2).cuda()
        dist.all_reduce(reduced)
        result = [dist.get_backend(), torch.npu.current_device(), str(reduced.device), reduced.tolist()]
        dist.destroy_process_group()
    """, env={"LOCAL_RANK": "3", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": str(free_port())})
    assert result == ["hccl", 3, "npu:3", [1.0, 1.0]]


def test_npu_tensors_route_bev_pool_v3_to_drivingsdk_with_int32_ranks(run_scenario):
    """The port's bev_pool_v3 on npu tensors (float64 non-contiguous depth, int64 ranks) reaches DrivingSDK's kernel,
    which refuses anything but float32 features and int32 ranks on the NPU, and matches the portable op forward and
    backward. mx_driving.bev_pool_v3 is observed (wrapped, still called) for what the kernel does not check."""
    result, kernels = run_scenario("""
        import importlib
        import torch
        import mx_driving
        pool = importlib.import_module('projects.mmdet3d_plugin.ops.bev_pool_v3')
        seen = []
        real_bev_pool_v3 = mx_driving.bev_pool_v3
        def bev_pool_v3(depth, feat, ranks_depth, ranks_feat, ranks_bev, shape):
            seen.append({'dtypes': [str(t.dtype) for t in (depth, feat, ranks_depth, ranks_feat, ranks_bev)],
                         'contiguous': depth.is_contiguous() and feat.is_contiguous(),
                         'shape': [type(shape).__name__, shape]})
            return real_bev_pool_v3(depth, feat, ranks_depth, ranks_feat, ranks_bev, shape)
        mx_driving.bev_pool_v3 = bev_pool_v3
        g = torch.Generator().manual_seed(0)
        depth = torch.rand(1, 2, 3, 5, 4, generator=g, dtype=torch.float64).transpose(3, 4)  # (1, 2, 3, 4, 5)
        feat = torch.randn(1, 2, 4, 5, 8, generator=g)
        n = 80
        ranks = (torch.randint(0, depth.numel(), (n,), generator=g), torch.randint(0, 40, (n,), generator=g),
                 torch.randint(0, 4, (n,), generator=g))  # int64, unsorted
        shape = (1, 1, 2, 2, 8)
        weights = torch.randn(1, 8, 1, 2, 2, generator=g)

        def pooled(device):
            d = depth.to(device).detach().requires_grad_()
            f = feat.to(device).detach().requires_grad_()
            out = pool.bev_pool_v3(d, f, *(r.to(device) for r in ranks), shape)
            (out * weights.to(device)).sum().backward()
            return out, d, f

        out_cpu, d_cpu, f_cpu = pooled('cpu')  # the portable op
        out, d, f = pooled('npu')
        result = {
            'implementation': pool.implementation_for(f), 'depth contiguous on npu': d.is_contiguous(),
            'out': [str(out.device), str(out.dtype), list(out.shape)], 'seen': seen,
            'max error': max(float((a.detach().cpu() - b.detach()).abs().max())
                             for a, b in ((out, out_cpu), (d.grad, d_cpu.grad), (f.grad, f_cpu.grad))),
        }
    """)
    assert result == {
        "implementation": "mx_driving", "depth contiguous on npu": False,
        "out": ["npu:0", "torch.float32", [1, 8, 1, 2, 2]],
        "seen": [{"dtypes": ["torch.float32", "torch.float32", "torch.int32", "torch.int32", "torch.int32"],
                  "contiguous": True, "shape": ["list", [1, 1, 2, 2, 8]]}],
        "max error": pytest.approx(0, abs=1e-5),
    }
    assert kernels == {"npu_bev_pool_v3": 1, "npu_bev_pool_v3_backward": 1}


def test_without_torch_npu_the_cpu_path_changes_nothing(run_scenario):
    result, kernels = run_scenario("""
        import sys
        from projects import device
        cfg = dict(type='AdamW', lr=1e-4)
        result = [device.device_type(), device.dist_backend(), device.adapt_optimizer(cfg), cfg,
                  device.apply_driving_sdk_patches(),
                  sorted(m for m in ('torch_npu', 'mx_driving') if m in sys.modules)]
    """, npu=False)
    assert result == ["cpu", "gloo", None, {"type": "AdamW", "lr": 1e-4},
                      "DrivingSDK patches: none (not on an NPU)", []]
    assert kernels == {}


def test_forcing_the_cpu_on_an_npu_host(run_scenario):
    """FLASHOCC_DEVICE=cpu with an NPU present: CPU everywhere, torch.cuda left alone, no NPU optimizer or patches."""
    result, _ = run_scenario("""
        import sys
        import torch
        cuda_current_device = torch.cuda.current_device
        from projects import device
        import torch_npu
        cfg = dict(type='AdamW', lr=1e-4)
        result = [torch.npu.is_available(), device.device_type(), device.dist_backend(), device.adapt_optimizer(cfg),
                  device.pin_memory(), device.apply_driving_sdk_patches(),
                  torch.cuda.current_device is cuda_current_device,
                  'torch_npu.contrib.transfer_to_npu' in sys.modules]
    """, env={"FLASHOCC_DEVICE": "cpu"})
    assert result == [True, "cpu", "gloo", None, False, "DrivingSDK patches: none (not on an NPU)", True, False]


@pytest.mark.parametrize("value, message", [("tpu", "choose one of npu, cuda, cpu"),
                                            ("npu", "no NPU is usable")])
def test_forcing_an_impossible_device_is_a_clear_error(run_scenario, value, message):
    result, _ = run_scenario("""
        from projects import device
        try:
            device.device_type()
            result = None
        except (ValueError, RuntimeError) as exc:
            result = str(exc)
    """, npu=False, env={"FLASHOCC_DEVICE": value})
    assert result is not None and message in result


def test_new_modules_import_without_mmcv_or_mmdet3d():
    """CI on any machine relies on this: the port's new modules need torch only."""
    code = ("import sys, projects.device, projects.mmdet3d_plugin.ops.bev_pool_v3; "
            "print(sorted(m for m in ('mmcv', 'mmdet', 'mmdet3d', 'torch_npu') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PORT_FLASHOCC,
                          env={**os.environ, "PYTHONPATH": str(PORT_FLASHOCC)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


PIN_SCENARIO = """
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from projects import device
    (batch,) = next(iter(DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2, pin_memory=device.pin_memory())))
    result = [device.pin_memory(), batch.is_pinned()]
"""


def test_pinned_memory_on_the_npu_not_on_the_cpu(run_scenario):
    """On the NPU the loader's batches come back page-locked; on the CPU nothing is pinned."""
    on_npu, _ = run_scenario(PIN_SCENARIO)
    on_cpu, _ = run_scenario(PIN_SCENARIO, npu=False)
    assert (on_npu, on_cpu) == ([True, True], [False, False])
