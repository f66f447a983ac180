"""The kit's emulated Ascend NPU: torch_npu, hccl and DrivingSDK's kernels rehearsed on the CPU.

Switched on by ``FLASHOCC_EMULATE_NPU=1`` in an environment prepared by :mod:`npu_emulator.install`
(its ``.pth`` file runs :mod:`npu_emulator.activate` at interpreter start). Then ``import torch_npu``
loads the emulated package from ``site/``: a ``PrivateUse1`` backend named ``npu`` (C++ extension,
host memory, CPU kernels on the same memory), ``torch.npu``, ``torch_npu.contrib.transfer_to_npu``,
``torch_npu.optim`` and the ``hccl`` process-group backend (gloo on the same memory); and
``import mx_driving`` loads the real DrivingSDK wheel's Python code, with its compiled ``_C``
replaced by :mod:`npu_emulator.kernels`.

Environment variables:
    FLASHOCC_EMULATE_NPU=1              turn the emulation on (anything else: off, nothing changes)
    FLASHOCC_EMULATE_NPU_COUNT=N        emulated devices (default 8)
    FLASHOCC_NPU_EMULATOR_EXTENSION     path of the built extension (set by activation)
    FLASHOCC_NPU_EMULATOR_MX_DRIVING    directory the mx-driving wheel was installed into (--target)
"""

from __future__ import annotations

from pathlib import Path

ENV_FLAG = "FLASHOCC_EMULATE_NPU"
ENV_COUNT = "FLASHOCC_EMULATE_NPU_COUNT"
ENV_EXTENSION = "FLASHOCC_NPU_EMULATOR_EXTENSION"
ENV_MX_DRIVING = "FLASHOCC_NPU_EMULATOR_MX_DRIVING"

PACKAGE_DIR = Path(__file__).resolve().parent
SITE_DIR = PACKAGE_DIR / "site"  # prepended to sys.path: holds the emulated torch_npu
TOOLS_DIR = PACKAGE_DIR.parent  # on sys.path so that `import npu_emulator` works
DEVICE_NAME = "Ascend910B1"  # what torch_npu.npu.get_device_name() says on an Atlas 800T A2


def stack_pins(torch_version: str) -> dict:
    """The kit's stack for this torch (tools/pins.ini's [stack:torchX.Y]): its torch-npu and mx-driving."""
    import configparser

    major_minor = ".".join(torch_version.split("+")[0].split(".")[:2])
    parser = configparser.ConfigParser()
    parser.read(TOOLS_DIR / "pins.ini")
    section = f"stack:torch{major_minor}"
    return dict(parser[section]) if parser.has_section(section) else {}


def enabled() -> bool:
    import os

    return os.environ.get(ENV_FLAG, "").strip() == "1"
