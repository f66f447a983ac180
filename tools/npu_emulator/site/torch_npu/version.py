"""The emulated torch_npu's version: the stack's torch-npu release, marked as the emulation."""

import torch

_RELEASES = {"2.1": "2.1.0.post17", "2.7": "2.7.1.post11"}  # the kit's stacks (tools/pins.ini)
_torch = ".".join(torch.__version__.split("+")[0].split(".")[:2])
__version__ = _RELEASES.get(_torch, torch.__version__.split("+")[0]) + "+emulated"
