"""Pinned host memory (on for NPU and CUDA runs) keeps mmcv's DataContainer collation intact: the batches a
pinning DataLoader hands over reach the model through MMDataParallel's scatter, tensors pinned, metas whole."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")
pytest.importorskip("mmcv", reason="needs mmcv: run the suite in the kit's environment")


def test_a_pinned_mmcv_batch_reaches_the_model_with_its_tensors_pinned_and_its_metas_whole(monkeypatch):
    from functools import partial

    from mmcv.parallel import DataContainer, MMDataParallel, collate
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = set()

    def fake_pin(self, *args, **kwargs):  # CPU-only here: record what the pinning thread would page-lock
        copy = self.clone()
        pinned.add(copy.data_ptr())
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    samples = [{"img_inputs": (torch.rand(6, 3, 8, 8), torch.eye(4).repeat(6, 1, 1)),
                "voxel_semantics": torch.randint(0, 18, (20, 20, 4)),
                "img_metas": DataContainer({"sample_idx": i, "flip": bool(i)}, cpu_only=True)} for i in range(2)]
    batch = pin_memory(partial(collate, samples_per_gpu=2)(samples))  # what DataLoader(pin_memory=True) yields
    seen = {}

    class Model(torch.nn.Module):
        def forward(self, img_metas, img_inputs, voxel_semantics):
            seen.update(metas=img_metas, inputs=img_inputs, semantics=voxel_semantics)
            return {}

        def train_step(self, data, optimizer):
            return self(**data)

    MMDataParallel(Model()).train_step(batch, None)  # CPU: scatter to -1, DataContainers unwrapped
    assert [m["sample_idx"] for m in seen["metas"]] == [0, 1] and seen["metas"][1]["flip"] is True
    imgs, poses = seen["inputs"]
    assert imgs.shape == (2, 6, 3, 8, 8) and poses.shape == (2, 6, 4, 4)
    assert {imgs.data_ptr(), poses.data_ptr(), seen["semantics"].data_ptr()} <= pinned


@pytest.mark.parametrize("pin", [True, False])
def test_data_pin_memory_reaches_the_train_and_the_validation_loaders(flashocc_root, monkeypatch, tmp_path, pin):
    """mmdet3d.patch: train_detector hands the config's data.pin_memory to both of mmdet's build_dataloader calls."""
    from mmcv import Config
    from mmcv.runner import EpochBasedRunner
    from mmdet3d.apis import train as train_api

    loaders = []

    def build_dataloader(dataset, *args, **kwargs):
        loaders.append(kwargs)
        return torch.utils.data.DataLoader([0])

    monkeypatch.setattr(train_api, "build_mmdet_dataloader", build_dataloader)
    monkeypatch.setattr(train_api, "build_dataset", lambda cfg, default_args=None: [0])
    monkeypatch.setattr(EpochBasedRunner, "run", lambda self, *args, **kwargs: None)  # built, not trained
    cfg = Config(dict(data=dict(samples_per_gpu=1, workers_per_gpu=0, pin_memory=pin, val=dict(pipeline=[])),
                      gpu_ids=[0], seed=0, runner=dict(type="EpochBasedRunner", max_epochs=1),
                      optimizer=dict(type="SGD", lr=0.1), optimizer_config=dict(), lr_config=dict(policy="fixed"),
                      checkpoint_config=None, log_config=dict(interval=1, hooks=[]), work_dir=str(tmp_path),
                      resume_from=None, load_from=None, workflow=[("train", 1)], log_level="INFO"))
    train_api.train_detector(torch.nn.Linear(1, 1), [[0]], cfg, distributed=False, validate=True)
    assert len(loaders) == 2  # the training loader, then the validation one
    assert [kwargs.get("pin_memory") for kwargs in loaders] == [pin, pin]
