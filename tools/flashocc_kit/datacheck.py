"""`kit.py check-data`: is a data root what a config will read, before an 8-card hour is spent finding out?

The info files exist and were made by tools/create_data_bevdet.py (the keys the dataset reads); every
image, LiDAR file and Occ3D `labels.npz` they name exists and decodes; the cameras, the image size and
the labels' shapes and classes are what the config expects; the checkpoint the config loads is there.
The per-sample checks are the port's own (projects/mmdet3d_plugin/datasets/sample_check.py, which the
dataset also uses when a sample fails in training); this module runs them over whole info files,
in worker processes, with a progress bar. Needs the kit's environment (mmcv, numpy, Pillow).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path

from . import configfile
from .errors import KitError
from .occ3d import GRID_SHAPE, OCC_CLASSES, info_file
from .training.checkpoints import damage

SAMPLE_CHECK = Path("projects") / "mmdet3d_plugin" / "datasets" / "sample_check.py"
PRETRAINED_SOURCES = {  # where the checkpoints FlashOCC's configs load come from (the seed README)
    "bevdet-r50-cbgs.pth": "https://drive.usercontent.google.com/download?id=1oWkQLmzAXi_AoJZ259EbRmksbOyBbYuX"
                           "&export=download (BEVDet's detection pretraining; put it in ckpts/)",
}
QUICK_SAMPLES = 16  # per info file: what the launch scripts check before torchrun


@dataclass
class DataExpectations:
    """What a config expects of its data."""

    info_files: dict[str, Path]  # split -> info file (as the config names it, relative to the FlashOCC root)
    cameras: list[str]
    input_size: tuple[int, int]  # (H, W) of the network input
    load_from: str | None


@dataclass
class DataReport:
    checked: dict[str, int] = field(default_factory=dict)  # split -> samples checked
    total: dict[str, int] = field(default_factory=dict)  # split -> samples in the info file
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        counts = ", ".join(f"{split} {self.checked.get(split, 0)} of {total}" for split, total in self.total.items())
        head = f"checked {counts or 'no'} samples: " + (f"{len(self.problems)} problem(s)" if self.problems else "ok")
        return [head, *(f"  {p}" for p in self.problems)]


def expectations(flashocc: Path, config: str, data_root: str | None) -> DataExpectations:
    """Read the config with mmcv (its _base_ files included) for what it will read."""
    cfg = configfile.load(flashocc, config)
    files = {}
    for split in ("train", "val"):
        section = cfg.data.get(split) or {}
        if data_root is not None:  # as the launcher's --data-root sets it
            files[split] = Path(data_root.rstrip("/")) / info_file(split)
        elif section.get("ann_file"):
            files[split] = Path(section["ann_file"])
    data_config = cfg.get("data_config") or {}
    return DataExpectations(files, list(data_config.get("cams", [])), tuple(data_config.get("input_size", (0, 0))),
                            cfg.get("load_from"))


def _sample_check_module(flashocc: Path):
    path = flashocc / SAMPLE_CHECK
    if not path.is_file():
        raise KitError(f"{path} is missing: is flashocc.patch applied? (`python3 tools/kit.py status`)")
    spec = importlib.util.spec_from_file_location("flashocc_sample_check", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


_worker = {}


def _init_worker(flashocc: str, cameras: list[str]) -> None:
    os.chdir(flashocc)  # the infos' paths are relative to the FlashOCC root, where training runs
    _worker["check"] = _sample_check_module(Path(flashocc))
    _worker["cameras"] = cameras or None


def _check_one(info: dict) -> list[str]:
    check = _worker["check"]
    problems = check.check_sample(info, cameras=_worker["cameras"], grid_shape=GRID_SHAPE,
                                  num_classes=len(OCC_CLASSES))
    return [f"sample {info.get('token', '?')}: {p}" for p in problems]


def load_infos(path: Path, problems: list[str]) -> list[dict]:
    if not path.is_file():
        problems.append(f"{path}: missing. Fix: python tools/create_data_bevdet.py --root-path <data root> "
                        "(see README, Data)")
        return []
    try:
        with path.open("rb") as fh:
            data = pickle.load(fh)
    except Exception as exc:  # noqa: BLE001 (any unpickling failure: a damaged file)
        problems.append(f"{path}: does not load ({type(exc).__name__}: {exc})")
        return []
    infos = data.get("infos") if isinstance(data, dict) else None
    if not isinstance(infos, list) or not infos:
        problems.append(f"{path}: no 'infos' list (not made by tools/create_data_bevdet.py?)")
        return []
    return infos


def image_size_problem(flashocc: Path, info: dict, input_size: tuple[int, int]) -> str | None:
    """Whether PrepareImageInputs' crop fits these images (it scales by input_W / image_W, crops input_H)."""
    from PIL import Image

    from .synth.options import crop_fits

    cams = info.get("cams") or {}
    path = next((cam.get("data_path") for cam in cams.values()), None)
    if not path or not (flashocc / path).is_file() or not all(input_size):
        return None
    try:
        with Image.open(flashocc / path) as img:
            width, height = img.size
    except OSError:
        return None  # reported by the file checks
    if not crop_fits(width, height, input_size):
        return (f"images of {width}x{height} are too small for the config's input_size {input_size}: "
                "PrepareImageInputs' crop would leave the image")
    return None


def check_checkpoint(flashocc: Path, load_from: str | None) -> list[str]:
    if not load_from:
        return []
    path = flashocc / load_from
    where = PRETRAINED_SOURCES.get(Path(load_from).name, "see the config's comments")
    if not path.is_file():
        return [f"{load_from}: missing (the config's load_from). Get it from {where}"]
    why = damage(path)
    return [f"{load_from}: {why}. Get it again from {where}"] if why else []


def check_data(flashocc: Path, config: str, data_root: str | None = None, sample: int | None = None,
               workers: int = 1, progress: bool = True, seed: int = 0) -> DataReport:
    expected = expectations(flashocc, config, data_root)
    report = DataReport()
    jobs: list[dict] = []
    for split, rel in expected.info_files.items():
        path = rel if rel.is_absolute() else flashocc / rel
        infos = load_infos(path, report.problems)
        report.total[split] = len(infos)
        if not infos:
            continue
        chosen = infos if sample is None or sample >= len(infos) else random.Random(seed).sample(infos, sample)
        report.checked[split] = len(chosen)
        jobs += chosen
        size = image_size_problem(flashocc, infos[0], expected.input_size)
        if size:
            report.problems.append(f"{path}: {size}")
    if jobs:
        from tqdm import tqdm

        args = (str(flashocc), expected.cameras)
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers, _init_worker, args) as pool:
                results = list(tqdm(pool.imap(_check_one, jobs, chunksize=4), total=len(jobs), disable=not progress,
                                    desc="checking samples", unit="sample"))
                pool.close()  # the workers end by themselves (their exit handlers run), not by __exit__'s SIGTERM
                pool.join()
        else:
            cwd = os.getcwd()
            try:
                _init_worker(*args)
                results = [_check_one(info) for info in tqdm(jobs, disable=not progress, desc="checking samples",
                                                               unit="sample")]
            finally:
                os.chdir(cwd)
        report.problems += [p for found in results for p in found]
    report.problems += check_checkpoint(flashocc, expected.load_from)
    return report
