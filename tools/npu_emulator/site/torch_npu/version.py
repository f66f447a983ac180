"""The emulated torch_npu's version: the stack's torch-npu release (tools/pins.ini), marked as the emulation."""

import torch

from npu_emulator import stack_pins

__version__ = stack_pins(torch.__version__).get("torch-npu", torch.__version__.split("+")[0]) + "+emulated"
