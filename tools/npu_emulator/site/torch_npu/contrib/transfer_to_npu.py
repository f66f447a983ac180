"""Importing this redirects CUDA code to the npu, as torch_npu.contrib.transfer_to_npu does.

The subset of the real module (torch-npu 2.1.0.post17) that training code reaches: torch.cuda's
functions, Tensor/Module ``.cuda()``, ``device='cuda'`` (and ``torch.device('cuda')``, and ints for
``.to``) in factory functions, ``Tensor.to``/``new_*``, ``Module.to``, ``torch.autocast``, the
DistributedDataParallel constructor, ``init_process_group(backend='nccl')`` -> hccl, and
``torch.jit.script`` (disabled, as the real module does).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

import torch_npu

__all__: list = []

torch_fn_white_list = [
    "logspace", "randint", "hann_window", "rand", "full_like", "ones_like", "rand_like", "randperm", "arange",
    "frombuffer", "normal", "_empty_per_channel_affine_quantized", "empty_strided", "empty_like", "scalar_tensor",
    "tril_indices", "bartlett_window", "ones", "sparse_coo_tensor", "randn", "kaiser_window", "tensor",
    "triu_indices", "as_tensor", "zeros", "randint_like", "full", "eye", "_sparse_csr_tensor_unsafe", "empty",
    "_sparse_coo_tensor_unsafe", "blackman_window", "zeros_like", "range", "sparse_csr_tensor", "randn_like",
    "from_file", "_cudnn_init_dropout_state", "_empty_affine_quantized", "linspace", "hamming_window",
    "empty_quantized", "_pin_memory", "load", "set_default_device",
]
torch_tensor_fn_white_list = ["new_empty", "new_empty_strided", "new_full", "new_ones", "new_tensor", "new_zeros",
                              "to", "pin_memory"]
torch_module_fn_white_list = ["to", "to_empty"]
device_kwargs_list = ["device", "device_type", "map_location", "device_id"]


def _to_npu(value: Any, replace_int: bool) -> Any:
    if isinstance(value, str) and "cuda" in value:
        return value.replace("cuda", "npu")
    if isinstance(value, torch.device) and value.type == "cuda":
        return torch.device("npu" if value.index is None else f"npu:{value.index}")
    if replace_int and isinstance(value, int) and not isinstance(value, bool):
        return f"npu:{value}"
    if isinstance(value, dict):
        return {(k.replace("cuda", "npu") if isinstance(k, str) else k):
                (v.replace("cuda", "npu") if isinstance(v, str) else v) for k, v in value.items()}
    return value


def _wrapper_cuda(fn):
    replace_int = fn.__name__ in ("to", "to_empty")

    @functools.wraps(fn)
    def decorated(*args: Any, **kwargs: Any):
        if args:
            args = tuple(_to_npu(a, replace_int) for a in args)
        for key in device_kwargs_list:
            if kwargs.get(key) is not None:
                kwargs[key] = _to_npu(kwargs[key], key != "map_location" and isinstance(kwargs[key], int))
        if isinstance(kwargs.get("device_ids"), list):
            kwargs["device_ids"] = [_to_npu(d, False) for d in kwargs["device_ids"]]
        return fn(*args, **kwargs)

    return decorated


def _device_wrapper(owner: Any, names: list) -> None:
    for name in names:
        fn = getattr(owner, name, None)
        if fn is not None and not getattr(fn, "_npu_wrapped", False):
            wrapped = _wrapper_cuda(fn)
            wrapped._npu_wrapped = True
            setattr(owner, name, wrapped)


def _wrapper_hccl(fn):
    @functools.wraps(fn)
    def decorated(*args: Any, **kwargs: Any):
        args = tuple(a.replace("nccl", "hccl") if isinstance(a, str) else a for a in args)
        if isinstance(kwargs.get("backend"), str):
            kwargs["backend"] = kwargs["backend"].replace("nccl", "hccl")
        return fn(*args, **kwargs)

    return decorated


def _patch_cuda() -> None:
    npu = torch_npu.npu
    for name in npu.__all__:
        setattr(torch.cuda, name, getattr(npu, name))
    torch.cuda.amp.autocast = npu.amp.autocast
    torch.cuda.DoubleTensor = npu.FloatTensor  # as the real module: the NPU has no float64 matmuls
    torch.cuda.CUDAGraph = npu.NPUGraph


def _jit_script(obj, optimize=None, _frames_up=0, _rcb=None, example_inputs=None):
    return obj


def _init() -> None:
    _patch_cuda()
    _device_wrapper(torch.cuda, ["set_device", "synchronize", "get_device_name", "get_device_properties",
                                 "memory_allocated", "max_memory_allocated", "memory_reserved",
                                 "max_memory_reserved", "reset_peak_memory_stats", "current_stream",
                                 "default_stream", "memory_stats", "mem_get_info"])
    torch.cuda.device.__init__ = _wrapper_cuda(torch.cuda.device.__init__)
    _device_wrapper(torch, torch_fn_white_list)
    torch.amp.autocast_mode.autocast.__init__ = _wrapper_cuda(torch.amp.autocast_mode.autocast.__init__)
    _device_wrapper(torch.Tensor, torch_tensor_fn_white_list)
    torch.Tensor.cuda = torch.Tensor.npu
    torch.Tensor.is_cuda = torch.Tensor.is_npu
    _device_wrapper(torch.nn.Module, torch_module_fn_white_list)
    torch.nn.Module.cuda = torch.nn.Module.npu
    torch.distributed.init_process_group = _wrapper_hccl(torch.distributed.init_process_group)
    torch.distributed.is_nccl_available = torch_npu.distributed.is_hccl_available
    _device_wrapper(torch.nn.parallel.DistributedDataParallel, ["__init__"])
    torch.jit.script = _jit_script
    torch.jit.script_method = lambda fn: fn
    torch._utils._get_available_device_type = lambda: "npu" if torch.npu.is_available() else None


_init()
