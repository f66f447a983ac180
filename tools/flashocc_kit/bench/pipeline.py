"""`kit.py bench pipeline`: upstream's train pipeline against the port's, in one process.

Upstream's steps come from the pinned commit (bench.upstream), the port's from the workspace's
patched FlashOCC; both see the same input dicts with the same numpy seed, one after the other in
alternating order, so machine noise hits both alike. Every step is timed; the outputs the model
reads are compared bit for bit on the way. Then the same pipelines run in a DataLoader with 1 and
2 worker processes (what training does), and the depth-supervised pipeline's PointToMultiViewDepth
stage is compared on its own. Medians throughout.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KitError
from ..occ3d import info_file
from ..pins import load_projects
from . import common, upstream

TRAIN_CONFIG = "projects/configs/flashocc/flashocc-r50.py"
DEPTH_CONFIG = "projects/configs/panoptic-flashocc/panoptic-flashocc-r50-depth.py"
MODEL_INPUTS = ("img_inputs", "voxel_semantics", "mask_lidar", "mask_camera")
DEPTH_STAGE = "PointToMultiViewDepth"
DRAFT = "patched+jpeg_draft"
TARGETS = {"train_ratio": 2.0, "depth_stage_ratio": 3.0}


@dataclass
class Variant:
    name: str
    steps: list
    step_ms: dict[str, list[float]] = field(default_factory=dict)
    total_ms: list[float] = field(default_factory=list)

    def step_names(self) -> list[str]:
        seen: dict[str, int] = {}
        names = []
        for step in self.steps:
            base = type(step).__name__
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
        return names

    def run(self, info: dict, seed: int) -> dict:
        """One sample through every step, timed; upstream's draws come from numpy's global state."""
        import numpy as np

        np.random.seed(seed)
        random.seed(seed)
        results = copy.deepcopy(info)
        total = 0.0
        for name, step in zip(self.step_names(), self.steps):
            start = time.perf_counter()
            results = step(results)
            took = time.perf_counter() - start
            total += took
            self.step_ms.setdefault(name, []).append(common.ms(took))
        self.total_ms.append(common.ms(total))
        return results

    def summary(self) -> dict:
        total = common.median(self.total_ms)
        return {"steps_ms": {k: common.median(v) for k, v in self.step_ms.items()}, "total_ms": total,
                "samples_per_s": round(1000 / total, 3) if total else None, "runs": len(self.total_ms)}


def unwrap(value):
    from mmcv.parallel import DataContainer

    if isinstance(value, DataContainer):
        return unwrap(value.data)
    if isinstance(value, (list, tuple)):
        return [unwrap(v) for v in value]
    return value


def identical(a, b) -> bool:
    """Same structure, dtypes and bits (NaN-safe: compares the raw values)."""
    import torch

    a, b = unwrap(a), unwrap(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return bool(a == b)


def differing_keys(a: dict, b: dict, keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if k not in a or k not in b or not identical(a[k], b[k])]


def train_dataset(flashocc: Path, config: str, root: Path):
    """The patched config's training set at `root` (its pipeline is the port's)."""
    from mmcv import Config
    from mmdet3d.datasets import build_dataset

    cfg = Config.fromfile(str(flashocc / config))
    train = cfg.data.train
    while train.get("type") in ("CBGSDataset", "RepeatDataset", "ClassBalancedDataset"):
        train = train.dataset
    prefix = str(root).rstrip("/") + "/"
    train.data_root, train.ann_file = prefix, prefix + info_file("train")
    return cfg, build_dataset(train)


def pipeline_inputs(dataset, count: int) -> list[dict]:
    if len(dataset) < count:
        raise KitError(f"the data set has {len(dataset)} training samples, {count} asked for. Fix: --samples "
                       f"{len(dataset)} or fewer")
    infos = []
    for index in range(count):
        info = dataset.get_data_info(index)
        dataset.pre_pipeline(info)
        infos.append(info)
    return infos


def patched_steps(step_cfgs: list[dict], **prepare_overrides) -> list:
    from mmcv.utils import build_from_cfg
    from mmdet3d.datasets.builder import PIPELINES

    steps = []
    for cfg in step_cfgs:
        cfg = dict(cfg)
        if cfg["type"] == "PrepareImageInputs":
            cfg.update(prepare_overrides)
        steps.append(build_from_cfg(cfg, PIPELINES))
    return steps


def interleave(variants: list[Variant], infos: list[dict], rounds: int, keys: tuple[str, ...],
               reference: str = "upstream", exact: tuple[str, ...] = ("patched",)) -> dict:
    """rounds x samples, every variant on each (same seed), order rotated; compares `exact`
    variants' outputs with the reference's."""
    compared = {name: 0 for name in exact}
    same = {name: 0 for name in exact}
    mismatches: list[dict] = []
    for rnd in range(rounds):
        for index, info in enumerate(infos):
            seed = 1000 * rnd + index
            shift = (rnd + index) % len(variants)
            outputs = {}
            for variant in variants[shift:] + variants[:shift]:
                outputs[variant.name] = variant.run(info, seed)
            for name in exact:
                bad = differing_keys(outputs[reference], outputs[name], keys)
                compared[name] += 1
                same[name] += not bad
                if bad:
                    mismatches.append({"variant": name, "sample": index, "seed": seed, "keys": bad})
    return {"keys": list(keys), "compared": compared, "identical": same, "mismatches": mismatches[:20]}


def psnr_of_draft(default: list, draft: list, infos: list[dict], seeds: list[int]) -> dict:
    """PSNR (dB) of the jpeg_draft crops against the default crops, same sample and seed (uint8)."""
    import numpy as np

    values = []
    for info, seed in zip(infos, seeds):
        crops = []
        for steps in (default, draft):
            np.random.seed(seed)
            crops.append(steps[0](copy.deepcopy(info))["canvas"])
        for a, b in zip(*crops):
            mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
            values.append(float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
    return {"median_db": round(float(np.median(values)), 2), "min_db": round(float(np.min(values)), 2),
            "images": len(values)}


class PipelineDataset:
    """A map-style dataset running one pipeline on the prepared input dicts (seeded per index)."""

    def __init__(self, infos: list[dict], steps: list, length: int):
        self.infos, self.steps, self.length = infos, steps, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        import numpy as np

        np.random.seed(index)
        results = copy.deepcopy(self.infos[index % len(self.infos)])
        for step in self.steps:
            results = step(results)
        return results


def loader_rate(steps: list, infos: list[dict], workers: int, samples: int) -> float:
    """Samples per second a DataLoader with `workers` processes delivers (mmcv's collate, batch 1),
    steady state: from the first batch to the last."""
    from functools import partial

    import torch
    from mmcv.parallel import collate

    loader = torch.utils.data.DataLoader(PipelineDataset(infos, steps, samples), batch_size=1,
                                         num_workers=workers, collate_fn=partial(collate, samples_per_gpu=1))
    first = last = None
    count = 0
    for _ in loader:
        last = time.perf_counter()
        first = first or last
        count += 1
    return round((count - 1) / (last - first), 3) if count > 1 and last > first else float("nan")


def dataloader_runs(variants: list[Variant], infos: list[dict], workers: list[int], samples: int,
                    repeats: int) -> list[dict]:
    rates: dict[tuple[str, int], list[float]] = {}
    for rep in range(repeats):
        for w in workers:
            order = variants if rep % 2 == 0 else variants[::-1]
            for variant in order:
                rates.setdefault((variant.name, w), []).append(loader_rate(variant.steps, infos, w, samples))
    rows = []
    for w in workers:
        row = {"workers": w}
        for variant in variants:
            row[variant.name] = common.median(rates[(variant.name, w)])
        if "upstream" in row and "patched" in row:
            row["ratio"] = common.ratio(row["patched"], row["upstream"])
        rows.append(row)
    return rows


def step_table(variants: list[Variant]) -> str:
    names: list[str] = []
    for variant in variants:
        for name in variant.step_names():
            if name not in names:
                names.append(name)
    rows = []
    summaries = {v.name: v.summary() for v in variants}
    for name in names:
        rows.append([name] + [f"{summaries[v.name]['steps_ms'][name]:.1f}" if name in summaries[v.name]["steps_ms"]
                              else "-" for v in variants])
    rows.append(["total per sample (median)"] + [f"{summaries[v.name]['total_ms']:.1f}" for v in variants])
    rows.append(["samples/s per worker"] + [f"{summaries[v.name]['samples_per_s']:.2f}" for v in variants])
    base = summaries[variants[0].name]["total_ms"]
    rows.append([f"speed-up vs {variants[0].name}"] + [f"{common.ratio(base, summaries[v.name]['total_ms']):.2f}x"
                                                      for v in variants])
    return common.format_rows(["step (ms)", *[v.name for v in variants]], rows)


@dataclass
class Settings:
    flashocc: Path
    sources_dir: Path | None
    data: Path
    config: str
    depth_config: str | None
    samples: int
    rounds: int
    threads: int
    workers: list[int]
    loader_samples: int
    loader_repeats: int
    draft: bool


def run(settings: Settings) -> dict:
    common.worker_threads(settings.threads)
    common.load_flashocc(settings.flashocc)
    cfg, dataset = train_dataset(settings.flashocc, settings.config, settings.data)
    infos = pipeline_inputs(dataset, settings.samples)
    up = Variant("upstream", upstream.train_steps(settings.flashocc, settings.config, settings.sources_dir))
    pa = Variant("patched", list(dataset.pipeline.transforms))
    variants = [up, pa]
    if settings.draft:
        variants.append(Variant(DRAFT, patched_steps(cfg.data.train.pipeline, jpeg_draft=True)))
    for variant in variants:  # warm-up: numba compilation, file cache, lazy imports
        variant.run(infos[0], 0)
        variant.step_ms.clear()
        variant.total_ms.clear()
    print(f"train pipeline {settings.config}: {settings.samples} samples x {settings.rounds} rounds, "
          f"torch threads {settings.threads}, data {settings.data}", flush=True)
    check = interleave(variants, infos, settings.rounds, MODEL_INPUTS)
    train = {"config": settings.config, "variants": {v.name: v.summary() for v in variants},
             "ratio": common.ratio(up.summary()["total_ms"], pa.summary()["total_ms"]), "exactness": check}
    print(step_table(variants))
    print(f"identical model inputs ({', '.join(MODEL_INPUTS)}): "
          f"{check['identical']['patched']}/{check['compared']['patched']} runs")
    if settings.draft:
        prepare = [c for c in cfg.data.train.pipeline if c["type"] == "PrepareImageInputs"]
        default = patched_steps(prepare, keep_canvas=True)
        draft = patched_steps(prepare, keep_canvas=True, jpeg_draft=True)
        psnr = train["jpeg_draft_psnr"] = psnr_of_draft(default, draft, infos, list(range(len(infos))))
        print(f"jpeg_draft (off by default): PSNR of its crops against the default's, median {psnr['median_db']} dB, "
              f"min {psnr['min_db']} dB over {psnr['images']} images")

    loader = dataloader_runs([up, pa], infos, settings.workers, settings.loader_samples, settings.loader_repeats)
    print(common.format_rows(["DataLoader samples/s", "upstream", "patched", "ratio"],
                             [[f"{r['workers']} worker(s)", f"{r['upstream']:.2f}", f"{r['patched']:.2f}",
                               f"{r['ratio']:.2f}x"] for r in loader]))

    document = {"kind": "flashocc-kit bench pipeline", "schema": 1, "machine": common.machine(),
                "versions": common.versions(),
                "settings": {"samples": settings.samples, "rounds": settings.rounds, "torch_threads": settings.threads,
                             "dataloader_workers": settings.workers, "dataloader_samples": settings.loader_samples,
                             "dataloader_repeats": settings.loader_repeats, "data": str(settings.data),
                             "upstream_commit": load_projects()["flashocc"].commit},
                "train": train, "dataloader": loader}
    if settings.depth_config:
        document["depth"] = depth_stage(settings, infos_count=settings.samples)
    document["targets"] = {
        "train_ratio": {"target": TARGETS["train_ratio"], "measured": train["ratio"],
                        "met": train["ratio"] >= TARGETS["train_ratio"]
                        and check["identical"]["patched"] == check["compared"]["patched"]}}
    if "depth" in document:
        d = document["depth"]
        document["targets"]["depth_stage_ratio"] = {
            "target": TARGETS["depth_stage_ratio"], "measured": d["stage_ratio"],
            "met": d["stage_ratio"] >= TARGETS["depth_stage_ratio"]
            and d["exactness"]["identical"]["patched"] == d["exactness"]["compared"]["patched"]}
    return document


def depth_stage(settings: Settings, infos_count: int) -> dict:
    _, dataset = train_dataset(settings.flashocc, settings.depth_config, settings.data)
    if not any(type(s).__name__ == DEPTH_STAGE for s in dataset.pipeline.transforms):
        raise KitError(f"--depth-config {settings.depth_config} has no {DEPTH_STAGE} in its train pipeline")
    infos = pipeline_inputs(dataset, infos_count)
    up = Variant("upstream", upstream.train_steps(settings.flashocc, settings.depth_config, settings.sources_dir))
    pa = Variant("patched", list(dataset.pipeline.transforms))
    for variant in (up, pa):
        variant.run(infos[0], 0)
        variant.step_ms.clear()
        variant.total_ms.clear()
    check = interleave([up, pa], infos, settings.rounds, (*MODEL_INPUTS, "gt_depth"))
    stage = {v.name: common.median(v.step_ms[DEPTH_STAGE]) for v in (up, pa)}
    import numpy as np

    np.random.seed(0)
    sample = pa.run(infos[0], 0)
    nonzero = int((unwrap(sample["gt_depth"]) > 0).sum())
    result = {"config": settings.depth_config, "stage": DEPTH_STAGE, "stage_ms": stage,
              "stage_ratio": common.ratio(stage["upstream"], stage["patched"]),
              "pipeline_ms": {v.name: common.median(v.total_ms) for v in (up, pa)},
              "gt_depth_nonzero_pixels": nonzero, "exactness": check}
    print(f"\ndepth pipeline {settings.depth_config}: {DEPTH_STAGE} {stage['upstream']:.2f} ms upstream, "
          f"{stage['patched']:.2f} ms patched ({result['stage_ratio']:.2f}x); whole pipeline "
          f"{result['pipeline_ms']['upstream']:.1f} -> {result['pipeline_ms']['patched']:.1f} ms; identical "
          f"(incl. gt_depth, {nonzero} depth pixels per sample): "
          f"{check['identical']['patched']}/{check['compared']['patched']} runs")
    return result
