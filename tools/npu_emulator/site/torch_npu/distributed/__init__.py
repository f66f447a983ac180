"""The emulated "hccl" process-group backend: gloo over the npu tensors' own memory."""

from __future__ import annotations

import datetime
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["is_hccl_available"]

_registered = False


def is_hccl_available() -> bool:
    return _registered


def _create_hccl(dist_backend_opts: Any, pg_options: Any = None):
    """hccl for one group: a gloo backend on the same store, wrapped to take npu tensors."""
    from torch.distributed import PrefixStore, ProcessGroupGloo

    from torch_npu import _C

    store = PrefixStore("hccl-emulated/", dist_backend_opts.store)
    rank, size = dist_backend_opts.group_rank, dist_backend_opts.group_size
    timeout = getattr(dist_backend_opts, "timeout", None) or datetime.timedelta(minutes=30)
    gloo = ProcessGroupGloo(store, rank, size, timeout)
    return _C.HcclEmuBackend(gloo, rank, size)


def _register_hccl() -> None:
    global _registered
    if _registered or not dist.is_available():
        return
    if "hccl" not in dist.Backend.backend_list:
        dist.Backend.register_backend("hccl", _create_hccl, extended_api=True, devices=["npu"])
    torch.distributed.is_hccl_available = is_hccl_available
    _registered = True
