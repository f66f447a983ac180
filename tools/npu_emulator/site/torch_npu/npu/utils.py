"""torch_npu.npu.utils: the device functions, under the module path the real package has."""

from __future__ import annotations

from typing import Any


def _npu():
    from torch_npu import npu

    return npu


def get_device_name(device_name: Any = None) -> str:
    return _npu().get_device_name(device_name)


def get_device_properties(device_name: Any = None):
    return _npu().get_device_properties(device_name)


def device_count() -> int:
    return _npu().device_count()


def current_device() -> int:
    return _npu().current_device()


def set_device(device: Any) -> None:
    _npu().set_device(device)


def synchronize(device: Any = None) -> None:
    _npu().synchronize(device)


def is_bf16_supported() -> bool:
    return True


def get_cann_version(module: str = "CANN") -> str:
    return "emulated"
