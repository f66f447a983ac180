"""What the benchmarks share: worker-like thread settings, statistics, machine facts, output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from importlib import metadata
from pathlib import Path

from ..errors import KitError
from ..hostinfo import usable_cpus

DISTRIBUTIONS = ("torch", "numpy", "pillow", "opencv-python", "numba", "mmcv-full", "mmcv", "mmdet", "mmdet3d")


def worker_threads(threads: int) -> None:
    """The thread settings of a training data-loader worker: torch's DataLoader sets one intra-op
    thread per worker, mmdet's setup_multi_processes turns OpenCV's pool off. More threads on a
    loaded machine make small tensor ops spin and wait, which inflates upstream's numbers."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(0)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def ratio(slow: float, fast: float) -> float:
    return round(slow / fast, 3) if fast > 0 else float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    cores = usable_cpus()
    return {"host": platform.node(), "cpu": cpu_model(), "arch": platform.machine(), "cores": cores,
            "python": sys.version.split()[0], "os": platform.platform(),
            "load_average_start": list(os.getloadavg())}


def versions() -> dict:
    found = {}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_json(path: str | Path, document: dict) -> None:
    document.setdefault("machine", machine())["load_average_end"] = list(os.getloadavg())
    try:
        Path(path).write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    except OSError as exc:
        raise KitError(f"--json {path}: cannot write ({exc.strerror}). Fix: choose a writable path") from exc


def format_rows(headers: list[str], rows: list[list[str]]) -> str:
    """Plain aligned table; first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def load_flashocc(flashocc: Path) -> None:
    """Make the patched FlashOCC importable here and register its modules."""
    if not (flashocc / "projects" / "mmdet3d_plugin").is_dir():
        raise KitError(f"no FlashOCC checkout at {flashocc}. Fix: `python3 tools/kit.py setup` "
                       "(or --workspace pointing at one)")
    if str(flashocc) not in sys.path:
        sys.path.insert(0, str(flashocc))
    os.environ.setdefault("FLASHOCC_DEVICE", "cpu")
    import projects.mmdet3d_plugin  # noqa: F401  (registers the FlashOCC modules)
