"""torch_npu.profiler's names (DrivingSDK's mmengine patch builds one): torch's CPU profiler behind them."""

import enum

import torch
from torch.profiler import ProfilerAction, profile, schedule, tensorboard_trace_handler  # noqa: F401


class ProfilerActivity:
    CPU = torch.profiler.ProfilerActivity.CPU
    NPU = torch.profiler.ProfilerActivity.CPU  # the emulated device's work is CPU work


class ProfilerLevel(enum.Enum):
    Level0 = 0
    Level1 = 1
    Level2 = 2


class _ExperimentalConfig:
    def __init__(self, profiler_level=ProfilerLevel.Level0, **kwargs):
        self.profiler_level = profiler_level
        self.options = kwargs
