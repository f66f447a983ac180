"""torch.npu for the emulated device: devices, memory statistics, streams, events, RNG, autocast."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import namedtuple
from typing import Any

import torch

from npu_emulator import DEVICE_NAME
from npu_emulator.runtime import extension

from . import amp, utils  # noqa: F401

_C = extension()

__all__ = [
    "is_available", "is_initialized", "init", "device_count", "current_device", "set_device", "synchronize",
    "get_device_name", "get_device_properties", "get_device_capability", "mem_get_info", "can_device_access_peer",
    "device", "device_of", "Stream", "Event", "StreamContext", "stream", "set_stream", "current_stream",
    "default_stream", "manual_seed", "manual_seed_all", "seed", "seed_all", "initial_seed", "get_rng_state",
    "set_rng_state", "get_rng_state_all", "set_rng_state_all", "empty_cache", "memory_stats",
    "memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved", "memory_cached",
    "max_memory_cached", "reset_peak_memory_stats", "reset_max_memory_allocated", "reset_max_memory_cached",
    "reset_accumulated_memory_stats", "memory_summary", "memory_snapshot", "set_per_process_memory_fraction",
    "utilization", "is_bf16_supported", "get_amp_supported_dtype", "is_autocast_enabled",
    "set_autocast_enabled", "get_autocast_dtype", "set_autocast_dtype", "FloatTensor", "HalfTensor",
    "IntTensor", "LongTensor", "BoolTensor", "ByteTensor", "DoubleTensor", "NPUGraph", "is_current_stream_capturing",
]

_initialized = True
default_generators: tuple = ()


# ---------------------------------------------------------------- devices

def is_available() -> bool:
    return _C.device_count() > 0


def is_initialized() -> bool:
    return _initialized


def init() -> None:
    """Nothing to initialise on the emulated device."""


def _lazy_init() -> None:
    """torch asks the device module for it before first use; nothing to do here."""


def _is_in_bad_fork() -> bool:
    return False


def device_count() -> int:
    return int(_C.device_count())


def current_device() -> int:
    return int(_C.current_device())


def _get_device_index(device: Any, optional: bool = False) -> int:
    """The npu index of an int, 'npu', 'npu:1' or torch.device (None: the current device)."""
    if device is None:
        if optional:
            return current_device()
        raise ValueError("Expected an npu device, got None")
    if isinstance(device, str):
        device = torch.device(device)
    if isinstance(device, torch.device):
        if device.type != "npu":
            raise ValueError(f"Expected an npu device, got {device}")
        return current_device() if device.index is None else device.index
    return int(device)


def set_device(device: Any) -> None:
    index = _get_device_index(device)
    if index >= 0:
        _C.set_device(index)


def synchronize(device: Any = None) -> None:
    """Every emulated kernel has finished when it returns: nothing to wait for."""


def can_device_access_peer(device_id: int, peer_device_id: int) -> bool:
    return True


def get_device_name(device: Any = None) -> str:
    _get_device_index(device, optional=True)
    return DEVICE_NAME


_Properties = namedtuple("_NPUDeviceProperties", "name total_memory cube_core_num vector_core_num L2_cache_size")


def get_device_properties(device: Any = None):
    _get_device_index(device, optional=True)
    return _Properties(DEVICE_NAME, 64 * 2**30, 24, 48, 192 * 2**20)


def get_device_capability(device: Any = None):
    return None  # as torch_npu: NPUs have no CUDA compute capability


def mem_get_info(device: Any = None) -> tuple[int, int]:
    total = get_device_properties(device).total_memory
    return total - memory_reserved(device), total


def utilization(device: Any = None) -> int:
    return 0


def is_bf16_supported() -> bool:
    return True


class device:
    """Context manager that switches the current npu device."""

    def __init__(self, device: Any):
        self.idx = _get_device_index(device, optional=True) if device is not None else -1
        self.prev_idx = -1

    def __enter__(self):
        self.prev_idx = current_device()
        if self.idx >= 0 and self.idx != self.prev_idx:
            set_device(self.idx)
        return self

    def __exit__(self, *args: Any) -> bool:
        if self.idx >= 0 and self.idx != self.prev_idx:
            set_device(self.prev_idx)
        return False


class device_of(device):
    """Switches to the device of a tensor (none for CPU tensors)."""

    def __init__(self, obj: torch.Tensor):
        super().__init__(obj.get_device() if obj.device.type == "npu" else None)


# ---------------------------------------------------------------- streams and events (synchronous device)

class Stream(torch._C.Stream):
    """An npu stream. Work on the emulated device is synchronous, so waits are no-ops."""

    def __new__(cls, device: Any = None, priority: int = 0, **kwargs: Any):
        if {"stream_id", "device_index", "device_type"} <= set(kwargs):
            return super().__new__(cls, stream_id=kwargs["stream_id"], device_index=kwargs["device_index"],
                                   device_type=kwargs["device_type"])
        index = _get_device_index(device, optional=True)
        return super().__new__(cls, stream_id=0, device_index=index, device_type=_C.device_type)

    def wait_event(self, event: Event) -> None:
        event.wait(self)

    def wait_stream(self, stream: Stream) -> None:
        pass

    def record_event(self, event: Event | None = None) -> Event:
        event = event if event is not None else Event()
        event.record(self)
        return event

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass

    @property
    def npu_stream(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"<torch_npu.npu.Stream device=npu:{self.device_index} npu_stream=0x0 (emulated)>"


class Event:
    """An npu event: recorded work is already complete; times are host times."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self.enable_timing = enable_timing
        self._time: float | None = None

    def record(self, stream: Stream | None = None) -> None:
        self._time = time.perf_counter()

    def wait(self, stream: Stream | None = None) -> None:
        pass

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end_event: Event) -> float:
        if self._time is None or end_event._time is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end_event._time - self._time) * 1000.0


_streams = threading.local()


def current_stream(device: Any = None) -> Stream:
    index = _get_device_index(device, optional=True)
    chosen = getattr(_streams, "current", {}).get(index)
    return chosen if chosen is not None else Stream(index)


def default_stream(device: Any = None) -> Stream:
    return Stream(_get_device_index(device, optional=True))


def set_stream(stream: Stream | None) -> None:
    if stream is None:
        return
    if not hasattr(_streams, "current"):
        _streams.current = {}
    _streams.current[stream.device_index] = stream


class StreamContext:
    """Makes a stream current for a block (as torch.cuda.StreamContext)."""

    def __init__(self, stream: Stream | None):
        self.stream = stream
        self.prev: Stream | None = None

    def __enter__(self):
        if self.stream is not None:
            self.prev = current_stream(self.stream.device_index)
            set_stream(self.stream)
        return self.stream

    def __exit__(self, *args: Any) -> None:
        if self.prev is not None:
            set_stream(self.prev)


def stream(stream: Stream | None) -> StreamContext:
    return StreamContext(stream)


def is_current_stream_capturing() -> bool:
    """No graph is ever being captured (torch's optimizers ask through torch.cuda once transfer_to_npu patched it)."""
    return False


class NPUGraph:
    """torch_npu.npu.NPUGraph: graphs are not emulated."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise RuntimeError("NPU graphs are not emulated by the kit's NPU rehearsal")


# ---------------------------------------------------------------- random numbers (the CPU generator)
# The emulated device draws from torch's CPU generator, so seeding either seeds both.

def manual_seed(seed: int) -> None:
    torch.default_generator.manual_seed(int(seed))


def manual_seed_all(seed: int) -> None:
    torch.default_generator.manual_seed(int(seed))


def seed() -> None:
    torch.default_generator.seed()


def seed_all() -> None:
    torch.default_generator.seed()


def initial_seed() -> int:
    return torch.default_generator.initial_seed()


def get_rng_state(device: Any = "npu") -> torch.Tensor:
    return torch.default_generator.get_state()


def set_rng_state(new_state: torch.Tensor, device: Any = "npu") -> None:
    torch.default_generator.set_state(new_state)


def get_rng_state_all() -> list:
    return [get_rng_state(i) for i in range(device_count())]


def set_rng_state_all(new_states: list) -> None:
    if new_states:
        set_rng_state(new_states[-1])


# ---------------------------------------------------------------- memory (host memory, counted per device)

def _stats(device: Any) -> dict:
    return _C.memory_stats(_get_device_index(device, optional=True))


def memory_allocated(device: Any = None) -> int:
    return int(_stats(device)["allocated"])


def max_memory_allocated(device: Any = None) -> int:
    return int(_stats(device)["peak"])


def memory_reserved(device: Any = None) -> int:
    return int(_stats(device)["reserved"])


def max_memory_reserved(device: Any = None) -> int:
    return int(_stats(device)["peak_reserved"])


memory_cached = memory_reserved
max_memory_cached = max_memory_reserved


def reset_peak_memory_stats(device: Any = None) -> None:
    _C.reset_peak(_get_device_index(device, optional=True))


reset_max_memory_allocated = reset_peak_memory_stats
reset_max_memory_cached = reset_peak_memory_stats


def reset_accumulated_memory_stats(device: Any = None) -> None:
    pass


def memory_stats(device: Any = None) -> dict:
    s = _stats(device)
    return {
        "allocated_bytes.all.current": s["allocated"], "allocated_bytes.all.peak": s["peak"],
        "reserved_bytes.all.current": s["reserved"], "reserved_bytes.all.peak": s["peak_reserved"],
        "active_bytes.all.current": s["allocated"], "active_bytes.all.peak": s["peak"],
        "allocation.all.allocated": s["allocations"], "num_alloc_retries": 0, "num_ooms": 0,
    }


def memory_summary(device: Any = None, abbreviated: bool = False) -> str:
    s = _stats(device)
    return (f"emulated npu:{_get_device_index(device, optional=True)}: allocated {s['allocated']} B "
            f"(peak {s['peak']} B), reserved {s['reserved']} B (peak {s['peak_reserved']} B)")


def memory_snapshot() -> list:
    return []


def empty_cache() -> None:
    """No caching allocator: freed npu memory goes straight back to the host."""


def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
    pass


# ---------------------------------------------------------------- autocast (torch.autocast("npu") asks these)

def get_amp_supported_dtype() -> list:
    return [torch.float16, torch.bfloat16]


def is_autocast_enabled() -> bool:
    return bool(_C.autocast_enabled())


def set_autocast_enabled(enable: bool) -> None:
    _C.set_autocast_enabled(bool(enable))


def get_autocast_dtype() -> torch.dtype:
    return _C.autocast_dtype()


def set_autocast_dtype(dtype: torch.dtype) -> None:
    _C.set_autocast_dtype(dtype)


# ---------------------------------------------------------------- legacy tensor types

def _legacy(dtype: torch.dtype):
    def make(*args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.tensor(*args, dtype=dtype, device="npu", **kwargs) if args and not isinstance(
            args[0], int) else torch.empty(*args, dtype=dtype, device="npu", **kwargs)
    return make


FloatTensor = _legacy(torch.float32)
HalfTensor = _legacy(torch.float16)
DoubleTensor = _legacy(torch.float64)
IntTensor = _legacy(torch.int32)
LongTensor = _legacy(torch.int64)
BoolTensor = _legacy(torch.bool)
ByteTensor = _legacy(torch.uint8)


@contextlib.contextmanager
def _noop_context(*args: Any, **kwargs: Any):
    yield
