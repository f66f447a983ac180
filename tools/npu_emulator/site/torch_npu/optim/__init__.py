"""torch_npu.optim's fused optimizers, emulated by torch's own (same maths, same signatures)."""

import torch

__all__ = ["NpuFusedAdamW", "NpuFusedAdam", "NpuFusedSGD"]


class NpuFusedAdamW(torch.optim.AdamW):
    """AdamW with torch_npu.optim.NpuFusedAdamW's signature."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=False)


class NpuFusedAdam(torch.optim.Adam):
    """Adam with torch_npu.optim.NpuFusedAdam's signature."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=False)


class NpuFusedSGD(torch.optim.SGD):
    """SGD with torch_npu.optim.NpuFusedSGD's signature."""

    def __init__(self, params, lr=0.001, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, foreach=False)
