"""mmdet3d.patch's device-aware model wrapping, every branch, with recorded stand-in wrappers."""

from __future__ import annotations

import types

import pytest

torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")


class Recorder:
    """Stands in for a (distributed) data-parallel wrapper class: records how it was built."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def __call__(self, module, *args, **kwargs):
        self.calls.append((self.name, module.placed_on, kwargs))
        return self.name


class Model(torch.nn.Module):
    placed_on = "cpu"

    def npu(self):
        self.placed_on = "npu"
        return self

    def cuda(self, device=None):
        self.placed_on = f"cuda{'' if device is None else device}"
        return self


@pytest.fixture
def train_api(flashocc_root, monkeypatch):
    import mmcv.device.npu as npu_wrappers
    from mmcv import Config
    from mmdet3d.apis import train

    calls: list = []
    for name in ("MMDataParallel", "MMDistributedDataParallel"):
        monkeypatch.setattr(train, name, Recorder(name, calls))
    for name in ("NPUDataParallel", "NPUDistributedDataParallel"):
        monkeypatch.setattr(npu_wrappers, name, Recorder(name, calls))
    monkeypatch.setattr(torch, "npu", types.SimpleNamespace(current_device=lambda: 5), raising=False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)

    def wrap(device, distributed, **extra):
        cfg = Config(dict(device=device, gpu_ids=[0], **extra))
        return train.wrap_model_for_device(Model(), cfg, distributed), calls

    return wrap


@pytest.mark.parametrize("device, distributed, wrapper, placed, kwargs", [
    ("npu", True, "NPUDistributedDataParallel", "npu",
     {"device_ids": [5], "broadcast_buffers": False, "find_unused_parameters": True}),
    ("npu", False, "NPUDataParallel", "npu", {"device_ids": [0]}),
    ("cuda", True, "MMDistributedDataParallel", "cuda",
     {"device_ids": [3], "broadcast_buffers": False, "find_unused_parameters": True}),
    ("cuda", False, "MMDataParallel", "cuda0", {"device_ids": [0]}),
    ("cpu", True, "MMDistributedDataParallel", "cpu", {"broadcast_buffers": False, "find_unused_parameters": True}),
    ("cpu", False, "MMDataParallel", "cpu", {}),
])
def test_each_device_gets_its_wrapper(train_api, device, distributed, wrapper, placed, kwargs):
    wrapped, calls = train_api(device, distributed, find_unused_parameters=True)
    assert wrapped == wrapper
    name, placed_on, got = calls[-1]
    assert (name, placed_on) == (wrapper, placed)
    assert {k: v for k, v in got.items() if k != "find_unused_parameters" or distributed} == kwargs


def test_unknown_device_is_refused(train_api):
    with pytest.raises(ValueError, match="unsupported device 'mlu'"):
        train_api("mlu", False)


def test_mmcv_init_dist_refuses_a_gpu_backend_without_a_gpu(monkeypatch):
    pytest.importorskip("mmcv.runner")
    from mmcv.runner import dist_utils

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(dist_utils.torch.cuda, "device_count", lambda: 0)
    with pytest.raises(RuntimeError, match="backend 'nccl' needs a GPU.*use backend='gloo'"):
        dist_utils._init_dist_pytorch("nccl")
