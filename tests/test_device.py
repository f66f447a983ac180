"""The device module and the NPU routing (from flashocc.patch), with stand-in torch_npu/mx_driving.

The stand-ins are tiny packages on sys.path that record how they are called; each scenario runs
in a fresh interpreter so that nothing leaks between them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import PORT_FLASHOCC

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")

STANDINS = {
    "torch_npu/__init__.py": """
        import types, torch
        from _standin_log import record
        record("import torch_npu")
        torch.npu = types.SimpleNamespace(
            is_available=lambda: True,
            set_device=lambda index: record(f"torch.npu.set_device({index})"),
            current_device=lambda: 0,
            device_count=lambda: 8,
            synchronize=lambda: None,
        )
        from . import optim  # noqa: F401
    """,
    "torch_npu/contrib/__init__.py": "",
    "torch_npu/contrib/transfer_to_npu.py": """
        from _standin_log import record
        record("import torch_npu.contrib.transfer_to_npu")
    """,
    "torch_npu/optim/__init__.py": """
        import torch
        class NpuFusedAdamW(torch.optim.AdamW):
            pass
    """,
    "mx_driving/__init__.py": """
        from _standin_log import record
        ADD_RELU_CALLS = []
        def npu_add_relu(x, y):
            import torch
            ADD_RELU_CALLS.append(tuple(x.shape))
            return torch.relu(x + y)
        def bev_pool_v3(depth, feat, ranks_depth, ranks_feat, ranks_bev, bev_feat_shape):
            record({"call": "mx_driving.bev_pool_v3", "depth": str(depth.dtype), "feat": str(feat.dtype),
                    "contiguous": depth.is_contiguous() and feat.is_contiguous(),
                    "ranks": [str(r.dtype) for r in (ranks_depth, ranks_feat, ranks_bev)],
                    "shape": bev_feat_shape, "shape_type": type(bev_feat_shape).__name__})
            import torch
            B, D, H, W, C = bev_feat_shape
            return torch.zeros(B, C, D, H, W)
    """,
    # DrivingSDK's patcher, in the API STANDIN_PATCHER_API names: "patcher" (Patcher + patch classes, the 26.x
    # wheels), "builder" (PatcherBuilder, patches take the mmdet package) or "builder-old" (PatcherBuilder with an
    # mx_driving.patcher.mmdet module: the ResNet patch takes mmdet's resnet module). The patches really patch.
    "mx_driving/patcher/_patches.py": """
        import importlib, torch
        from _standin_log import record

        def batch_matmul(module, options):
            original = torch.matmul
            def matmul(a, b):
                return original(a, b)
            torch.matmul = matmul

        def _resnet_module(module):
            return module if module.__name__.endswith('resnet') else importlib.import_module(
                module.__name__ + '.models.backbones.resnet')

        def resnet_add_relu(module, options):
            import mx_driving
            resnet = _resnet_module(module)
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

        def resnet_fp16(module, options):
            record("resnet_fp16 applied")
    """,
    "mx_driving/patcher/__init__.py": """
        import importlib, os, sys
        from _standin_log import record
        from ._patches import batch_matmul, resnet_add_relu, resnet_fp16
        API = os.environ.get("STANDIN_PATCHER_API", "patcher")
        if API == "builder-old":
            sys.modules[__name__ + ".mmdet"] = importlib.import_module(__name__ + "._old_layout_mmdet")
        if API == "patcher":
            class _PatchClass:
                @classmethod
                def apply_to(cls):
                    cls.function(importlib.import_module(cls.module), {})
            class BatchMatmul(_PatchClass):
                name, module, function = "batch_matmul", "torch", staticmethod(batch_matmul)
            class ResNetAddRelu(_PatchClass):
                name, module, function = "resnet_add_relu", "mmdet", staticmethod(resnet_add_relu)
            class ResNetFP16(_PatchClass):
                name, module, function = "resnet_fp16", "mmdet", staticmethod(resnet_fp16)
            class Patcher:
                def __init__(self):
                    self.entries = []
                def add(self, *classes):
                    self.entries += classes
                    return self
                def apply(self):
                    record({"Patcher.apply": [c.name for c in self.entries]})
                    for c in self.entries:
                        c.apply_to()
                    return self
        class Patch:
            def __init__(self, func):
                self.func = func
        class _Built:
            def __init__(self, patches):
                self.patches = patches
            def apply(self):
                record("PatcherBuilder .apply() called (skips the 1.x context's setup)")
            def __enter__(self):
                record({"PatcherBuilder.build().__enter__": [[m, p.func.__name__] for m, p in self.patches]})
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
    """,
    # the old layout's module, present only as "builder-old" (the patcher package maps it in)
    "mx_driving/patcher/_old_layout_mmdet.py": """
    """,
    "_standin_log.py": """
        import json, os
        def record(event):
            with open(os.environ["STANDIN_LOG"], "a") as fh:
                fh.write(json.dumps(event) + "\\n")
    """,
}


@pytest.fixture
def run_scenario(tmp_path):
    """Run a snippet in a fresh interpreter, with or without the stand-ins; returns (result, calls)."""

    def run(code: str, standins: bool = True, env: dict[str, str] | None = None) -> tuple[object, list]:
        standin_dir = tmp_path / "standins"
        if standins:
            for rel, text in STANDINS.items():
                path = standin_dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(textwrap.dedent(text))
        log = tmp_path / "calls.jsonl"
        log.unlink(missing_ok=True)
        script = "import json\n" + textwrap.dedent(code) + "\nprint('RESULT ' + json.dumps(result))\n"
        paths = [str(standin_dir)] if standins else []
        paths.append(str(PORT_FLASHOCC))
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths), "STANDIN_LOG": str(log),
                 "FLASHOCC_DEVICE": "", **(env or {})})
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.split("RESULT ", 1)[1])
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return result, calls

    return run


def test_npu_is_chosen_with_hccl_and_the_cuda_shim(run_scenario):
    result, calls = run_scenario("""
        from projects import device
        result = [device.device_type(), device.dist_backend(), device.device_type()]
    """)
    assert result == ["npu", "hccl", "npu"]
    assert calls.count("import torch_npu.contrib.transfer_to_npu") == 1  # decided once


def test_npu_optimizer_is_the_fused_adamw_and_the_switch_is_reported(run_scenario):
    """mmcv registers torch_npu's optimizers only when it saw an NPU at import: the port registers the one it uses."""
    pytest.importorskip("mmcv", reason="needs mmcv: run the suite in the kit's environment")
    result, _ = run_scenario("""
        from mmcv.runner.optimizer import OPTIMIZERS
        before = OPTIMIZERS.get('NpuFusedAdamW')
        from projects import device
        cfg = dict(type='AdamW', lr=2e-4, weight_decay=1e-2)
        message = device.adapt_optimizer(cfg)
        result = [cfg, message, before is None, OPTIMIZERS.get('NpuFusedAdamW').__name__]
    """)
    cfg, message, unregistered_before, registered = result
    assert cfg == {"type": "NpuFusedAdamW", "lr": 2e-4, "weight_decay": 1e-2}
    assert "AdamW -> torch_npu NpuFusedAdamW" in message
    assert unregistered_before and registered == "NpuFusedAdamW"


RESNET_SCENARIO = """
    import torch
    from mmdet.models.backbones import ResNet
    from projects import device
    torch.manual_seed(0)
    net = ResNet(depth=50, out_indices=(0, 1, 2, 3))
    net.eval()  # (mmdet's ResNet.train returns None, so .eval() does too)
    x = torch.rand(1, 3, 64, 64)
    original_matmul = torch.matmul
    with torch.no_grad():
        before = net(x)
        line = device.apply_driving_sdk_patches(PRECISION)
        after = net(x)
    import mx_driving
    result = [line, len(mx_driving.ADD_RELU_CALLS),
              all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, after)),
              torch.matmul is not original_matmul]
"""


@pytest.mark.parametrize("api", ["patcher", "builder", "builder-old"])
def test_the_npu_trains_under_batch_matmul_and_resnet_add_relu_with_either_patcher_api(run_scenario, api):
    """A ResNet-50 forward after the patches really ends its 16 bottlenecks in mx_driving.npu_add_relu."""
    pytest.importorskip("mmdet", reason="needs mmdet: run the suite in the kit's environment")
    result, calls = run_scenario(RESNET_SCENARIO.replace("PRECISION", "'fp32'"), env={"STANDIN_PATCHER_API": api})
    line, add_relu_calls, same, matmul_replaced = result
    assert line == (f"DrivingSDK patches ({'Patcher' if api == 'patcher' else 'PatcherBuilder'} API, fp32): "
                    "applied batch_matmul, resnet_add_relu")
    assert add_relu_calls == 16 and same and matmul_replaced  # torch.matmul is the patcher's wrapper now
    if api == "patcher":
        assert {"Patcher.apply": ["batch_matmul", "resnet_add_relu"]} in calls
    else:
        module = "mmdet.models.backbones.resnet" if api == "builder-old" else "mmdet"
        assert {"PatcherBuilder.build().__enter__": [["torch", "batch_matmul"], [module, "resnet_add_relu"]]} in calls
        assert not any("apply() called" in str(c) for c in calls)  # the context, not .apply()


def test_the_fp16_backbone_gets_batch_matmul_only_and_keeps_the_ports_autocast(run_scenario):
    pytest.importorskip("mmdet", reason="needs mmdet: run the suite in the kit's environment")
    result, calls = run_scenario(RESNET_SCENARIO.replace("PRECISION", "'fp16-backbone'"))
    line, add_relu_calls, _, _ = result
    assert line == "DrivingSDK patches (Patcher API, fp16-backbone): applied batch_matmul"
    assert add_relu_calls == 0 and "resnet_fp16 applied" not in calls


def test_a_patch_that_changes_nothing_is_logged_as_skipped_with_the_reason(run_scenario):
    pytest.importorskip("mmdet", reason="needs mmdet: run the suite in the kit's environment")
    result, _ = run_scenario("""
        import mx_driving.patcher as patcher
        patcher.ResNetAddRelu.function = staticmethod(lambda module, options: None)  # patches nothing
        from projects import device
        result = device.apply_driving_sdk_patches()
    """)
    assert result.startswith("DrivingSDK patches (Patcher API, fp32): applied batch_matmul; skipped resnet_add_relu "
                             "(the patcher left mmdet.models.backbones.resnet.BasicBlock.forward")


def test_local_device_and_process_group_follow_local_rank(run_scenario):
    result, calls = run_scenario("""
        import torch
        from projects import device
        seen = {}
        torch.distributed.init_process_group = lambda backend, **kw: seen.update(backend=backend)
        device.init_distributed()
        result = seen
    """, env={"LOCAL_RANK": "3", "RANK": "11"})
    assert result == {"backend": "hccl"}
    assert "torch.npu.set_device(3)" in calls


def test_npu_tensors_route_bev_pool_v3_to_mx_driving(run_scenario):
    result, calls = run_scenario("""
        import types, torch
        import importlib
        pool = importlib.import_module('projects.mmdet3d_plugin.ops.bev_pool_v3')
        npu_tensor = types.SimpleNamespace(device=torch.device('meta'))
        npu_tensor.device = types.SimpleNamespace(type='npu')
        decided = pool.implementation_for(npu_tensor)
        pool.implementation_for = lambda tensor: decided
        depth = torch.rand(1, 2, 3, 4, 5, dtype=torch.float64).transpose(3, 4)
        feat = torch.rand(1, 2, 5, 4, 8)
        ranks = [torch.tensor([0, 1, 2]) for _ in range(3)]
        out = pool.bev_pool_v3(depth, feat, *ranks, (1, 1, 2, 2, 8))
        result = [decided, list(out.shape)]
    """)
    assert result == ["mx_driving", [1, 8, 1, 2, 2]]
    (call,) = [c for c in calls if isinstance(c, dict) and c.get("call") == "mx_driving.bev_pool_v3"]
    assert call["depth"] == call["feat"] == "torch.float32" and call["contiguous"]
    assert call["ranks"] == ["torch.int32"] * 3
    assert call["shape"] == [1, 1, 2, 2, 8] and call["shape_type"] == "list"


def test_without_torch_npu_the_cpu_path_changes_nothing(run_scenario):
    result, calls = run_scenario("""
        from projects import device
        cfg = dict(type='AdamW', lr=1e-4)
        result = [device.device_type(), device.dist_backend(), device.adapt_optimizer(cfg), cfg,
                  device.apply_driving_sdk_patches()]
    """, standins=False)
    assert result == ["cpu", "gloo", None, {"type": "AdamW", "lr": 1e-4},
                      "DrivingSDK patches: none (not on an NPU)"]
    assert calls == []


def test_forcing_a_device(run_scenario):
    result, calls = run_scenario("""
        from projects import device
        result = device.device_type()
    """, env={"FLASHOCC_DEVICE": "cpu"})
    assert result == "cpu"
    assert "import torch_npu.contrib.transfer_to_npu" not in calls


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
    """, standins=False, env={"FLASHOCC_DEVICE": value})
    assert result is not None and message in result


def test_new_modules_import_without_mmcv_or_mmdet3d():
    """CI on any machine relies on this: the port's new modules need torch only."""
    code = ("import sys, projects.device, projects.mmdet3d_plugin.ops.bev_pool_v3; "
            "print(sorted(m for m in ('mmcv', 'mmdet', 'mmdet3d', 'torch_npu') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PORT_FLASHOCC,
                          env={**os.environ, "PYTHONPATH": str(PORT_FLASHOCC)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"



def test_pinned_memory_on_the_npu_not_on_the_cpu(run_scenario):
    on_npu, _ = run_scenario("""
        from projects import device
        result = device.pin_memory()
    """)
    on_cpu, _ = run_scenario("""
        from projects import device
        result = device.pin_memory()
    """, standins=False)
    assert (on_npu, on_cpu) == (True, False)
