"""Record real mmcv 1.x logs for the results tests: a toy model trained by mmcv's own runner and hooks on CPU.

The files under tests/data/recorded/ come from this script (the exact commands are in recorded/README.md):
mmcv's EpochBasedRunner, TextLoggerHook, OptimizerHook (grad clip) and EvalHook write the JSON and text logs,
and FlashOCC's own Metric_mIoU.count_miou (loaded from the FlashOCC checkout) prints the "===>" lines, so the
formats are the real ones; only the model, its losses and the confusion matrix are made up. Run under torchrun for
a console where two ranks interleave (rank 1 issues warnings between rank 0's lines).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from mmcv.runner import EpochBasedRunner, EvalHook, get_dist_info
from mmcv.utils import get_logger
from torch.utils.data import DataLoader, Dataset

KIT_ROOT = Path(__file__).resolve().parents[2]
METRIC = KIT_ROOT / "FlashOCC" / "projects" / "mmdet3d_plugin" / "core" / "evaluation" / "occ_metrics.py"


def flashocc_metric_class():
    spec = importlib.util.spec_from_file_location("occ_metrics", METRIC)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Metric_mIoU


class Samples(Dataset):
    def __init__(self, n: int, seed: int, metric_cls=None):
        self.x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
        self.metric_cls = metric_cls

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i]}

    def evaluate(self, results, logger=None, **kwargs):
        """FlashOCC's NuScenesDatasetOccpancy.evaluate, mIoU branch: Metric_mIoU.count_miou on a confusion matrix."""
        metric = self.metric_cls(num_classes=18, use_lidar_mask=False, use_image_mask=True)
        rng = np.random.default_rng(len(results))
        hist = rng.integers(0, 40, size=(18, 18)).astype(float)
        hist += np.diag(rng.integers(20, 400, size=18))
        hist[2, :] = 0  # bicycle absent from the ground truth and never predicted: IoU nan, as on tiny subsets
        hist[:, 2] = 0
        metric.hist = hist
        metric.cnt = len(results)
        return metric.count_miou()


class Toy(torch.nn.Module):
    def __init__(self, slow_first: int, step_sleep: float, nan_at: int | None):
        super().__init__()
        self.net = torch.nn.Linear(8, 2)
        self.calls = 0
        self.slow_first, self.step_sleep, self.nan_at = slow_first, step_sleep, nan_at

    def forward(self, x, return_loss=True, **kwargs):
        return [self.net(x).sum().item() for _ in range(len(x))]

    def train_step(self, data, optimizer):
        self.calls += 1
        # first iterations slow (warm-up: graph compile, caches), then steady
        time.sleep(self.step_sleep * (6 if self.calls <= self.slow_first else 1))
        out = self.net(data["x"])
        loss_occ = (out[:, 0] - 1).pow(2).mean()
        loss_depth = 0.1 * out[:, 1].abs().mean()
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss_occ = loss_occ * float("nan")
        loss = loss_occ + loss_depth
        log_vars = OrderedDict(loss_occ=loss_occ.item(), loss_depth=loss_depth.item(), loss=loss.item())
        return {"loss": loss, "log_vars": log_vars, "num_samples": len(data["x"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=24, help="training samples per rank")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--interval", type=int, default=4)
    parser.add_argument("--eval-start", type=int, default=2)
    parser.add_argument("--step-sleep", type=float, default=0.02)
    parser.add_argument("--nan-at", type=int, help="training call from which loss_occ is NaN")
    args = parser.parse_args()

    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    rank, _ = get_dist_info()
    warnings.simplefilter("always")
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    # as mmdet3d's get_root_logger: logger 'mmdet', file <work_dir>/<timestamp>.log on rank 0, ERROR on the others
    logger = get_logger("mmdet", log_file=str(work_dir / f"{timestamp}.log"))
    torch.manual_seed(rank)
    model = Toy(slow_first=2, step_sleep=args.step_sleep, nan_at=args.nan_at)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
    meta = {"env_info": f"sys.platform: linux\nPython: toy\nCUDA available: False\nPyTorch: {torch.__version__}",
            "config": "optimizer = dict(type='AdamW', lr=0.0001, weight_decay=0.01)\n", "seed": 0,
            "exp_name": "flashocc-r50.py"}
    runner = EpochBasedRunner(model, optimizer=optimizer, work_dir=str(work_dir), logger=logger, meta=meta,
                              max_epochs=args.epochs)
    runner.timestamp = timestamp
    runner.register_training_hooks(
        lr_config={"policy": "step", "warmup": "linear", "warmup_iters": 5, "warmup_ratio": 0.001, "step": [24]},
        optimizer_config={"grad_clip": {"max_norm": 5, "norm_type": 2}},
        log_config={"interval": args.interval, "hooks": [{"type": "TextLoggerHook"}]})
    if rank == 0 and args.eval_start <= args.epochs:
        val = DataLoader(Samples(6, seed=99, metric_cls=flashocc_metric_class()), batch_size=1)
        runner.register_hook(EvalHook(val, interval=1, start=args.eval_start), priority="LOW")
    train = DataLoader(Samples(args.samples, seed=rank), batch_size=args.batch, shuffle=False)

    if rank != 0:  # other ranks only warn, between rank 0's log lines, as real runs do
        def noisy_step(data, optimizer, _step=model.train_step):
            if model.calls % 3 == 0:
                warnings.warn(f"toy warning from rank {rank} at call {model.calls}", UserWarning, stacklevel=1)
            return _step(data, optimizer)
        model.train_step = noisy_step
    runner.run([train], [("train", 1)])


if __name__ == "__main__":
    main()
