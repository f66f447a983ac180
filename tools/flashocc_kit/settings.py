"""The launcher's environment variables (FLASHOCC_DEVICE, FLASHOCC_SMOKE, FLASHOCC_EMULATE_NPU, FLASHOCC_TORCHRUN),
each parsed here once: a value, or a KitError naming the variable, its value and the fix.

The kit's own locations (FLASHOCC_KIT_*) are read in pins.py, and the nodes of a run (NNODES, NODE_RANK,
MASTER_ADDR, MASTER_PORT) in training/nodes.py, the same way.
"""

from __future__ import annotations

import os
import shlex
import shutil

from .errors import KitError

DEVICE_ENV = "FLASHOCC_DEVICE"  # npu | cuda | cpu: forces the port's device decision (projects/device.py)
DEVICES = ("npu", "cuda", "cpu")
SMOKE_ENV = "FLASHOCC_SMOKE"  # 1: the CPU smoke configuration, as --smoke
TORCHRUN_ENV = "FLASHOCC_TORCHRUN"  # a site's own torchrun (a wrapper), instead of the environment's
EMULATE_ENV = "FLASHOCC_EMULATE_NPU"  # 1: torch_npu and mx_driving are the kit's emulation (the NPU rehearsal)


def forced_device() -> str | None:
    """FLASHOCC_DEVICE, or None when it is unset or empty."""
    value = os.environ.get(DEVICE_ENV, "").strip().lower()
    if value and value not in DEVICES:
        raise KitError(f"{DEVICE_ENV}={os.environ[DEVICE_ENV]} is not a device. Fix: set it to one of "
                       f"{', '.join(DEVICES)}, or unset it to let the port choose")
    return value or None


def smoke_requested() -> bool:
    value = os.environ.get(SMOKE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise KitError(f"{SMOKE_ENV}={value} is neither 1 nor 0. Fix: {SMOKE_ENV}=1 for the CPU smoke run "
                       "(or --smoke), or unset it")
    return value == "1"


def emulating_npu() -> bool:
    """FLASHOCC_EMULATE_NPU=1: the NPU rehearsal (read as tools/npu_emulator reads it: only "1" turns it on)."""
    value = os.environ.get(EMULATE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise KitError(f"{EMULATE_ENV}={value} is neither 1 nor 0. Fix: {EMULATE_ENV}=1 to rehearse the NPU run on "
                       "this CPU (or --emulate-npu), or unset it")
    return value == "1"


def torchrun_override() -> list[str] | None:
    """FLASHOCC_TORCHRUN as a command line, its program found on PATH or given as a path."""
    value = os.environ.get(TORCHRUN_ENV, "").strip()
    if not value:
        return None
    try:
        command = shlex.split(value)
    except ValueError as exc:
        raise KitError(f"{TORCHRUN_ENV}={value} is not a command line ({exc}). Fix: quote it as a shell would, "
                       "or unset it") from None
    if shutil.which(command[0]) is None:
        raise KitError(f"{TORCHRUN_ENV}={value}: {command[0]} is not an executable program. Fix: give the path of "
                       "your torchrun wrapper, or unset it to use the environment's torchrun")
    return command
