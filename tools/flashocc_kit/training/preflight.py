"""Checks before any rank starts: what would otherwise fail minutes into an 8-card run, or at its first save."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..diskspace import GIB, free_bytes
from ..errors import KitError
from ..settings import forced_device
from .run import Run

MIN_FREE_BYTES = 2 * GIB  # a flashocc-r50 checkpoint is ~0.3 GB; with logs and a few of them, 2 GB
SMOKE_MIN_FREE_BYTES = 256 * 1024**2


def check_work_dir(work_dir: Path, smoke: bool) -> None:
    """The work dir can be created and written, and its filesystem has room for checkpoints."""
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=work_dir, prefix=".kit-write-test-"):
            pass
    except OSError as exc:
        raise KitError(f"work dir {work_dir} cannot be written ({exc.strerror or exc}). Fix: give a writable "
                       "--work-dir") from None
    free = free_bytes(work_dir)
    needed = SMOKE_MIN_FREE_BYTES if smoke else MIN_FREE_BYTES
    if free < needed:
        raise KitError(f"work dir {work_dir}: only {free / 1024**2:.0f} MiB free, and checkpoints need at least "
                       f"{needed / 1024**2:.0f} MiB. Fix: free space, or give another --work-dir")


def device_count(run: Run) -> tuple[str, int | None]:
    """The device the ranks will use and how many this node has (None: not countable here): the port's own
    decision (projects/device.py), the one place the launcher asks it."""
    import sys

    if run.smoke or forced_device() == "cpu":
        return "cpu", None

    sys.path.insert(0, str(run.flashocc))
    try:
        from projects import device  # the port's own decision

        kind = device.device_type()
        return kind, device.device_count() if kind != "cpu" else None
    finally:
        sys.path.remove(str(run.flashocc))


def check_devices(run: Run) -> None:
    kind, count = device_count(run)
    if count is not None and run.devices > count:
        raise KitError(f"--num-npu {run.devices}, but this node has {count} {kind.upper()} device(s). Fix: "
                       f"--num-npu {count} (or less), or check ASCEND_RT_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES")


def check_data_quickly(run: Run) -> None:
    """A few samples of each info file and the config's checkpoint (`kit.py check-data --sample`)."""
    from ..datacheck import QUICK_SAMPLES, check_data

    report = check_data(run.flashocc, run.config, run.data_root if run.data_root_given else None,
                        sample=QUICK_SAMPLES, workers=1, progress=False)
    if not report.ok:
        raise KitError("the data check before training found problems (`kit.py check-data` checks every "
                       "sample; --no-data-check skips this):\n" + "\n".join(report.lines()))
    print(report.lines()[0].replace("checked", "data check: checked", 1), flush=True)
