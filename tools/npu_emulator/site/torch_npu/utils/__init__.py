"""torch_npu.utils as far as the emulation needs it."""

from . import _error_code  # noqa: F401


def npu_combine_tensors(list_of_tensor, require_copy_list=None):
    """torch_npu's flattening of tensors into one buffer (here a plain concatenation)."""
    import torch

    if not list_of_tensor:
        return None
    return torch.cat([t.reshape(-1) for t in list_of_tensor])
