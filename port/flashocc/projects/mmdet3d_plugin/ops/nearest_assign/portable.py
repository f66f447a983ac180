# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""nearest_assign without the CUDA extension (panoptic FlashOCC configs)."""
import torch


def nearest_assign_portable(occ_pred, l2s_key, occind2detind, inst_cls,
                            inst_xyz, inst_id_list, chunk=1 << 16):
    """The CUDA kernel's semantics in PyTorch, on any device.

    A voxel whose predicted label is in l2s_key takes the id of the nearest
    instance (squared voxel distance, first one on ties) whose class is
    occind2detind[label], or 0 if there is none; other voxels keep their
    label.
    """
    occ = occ_pred.reshape(-1).long()
    out = occ.clone()
    occind2detind = occind2detind.reshape(-1).long()
    inst_cls = inst_cls.reshape(-1).long()
    inst_xyz = inst_xyz.reshape(-1, 3).long()
    inst_ids = inst_id_list.reshape(-1).long()
    keyed = torch.isin(occ, l2s_key.reshape(-1).long())
    out[keyed] = 0
    Dx, Dy, Dz = occ_pred.shape[-3:]
    for idx in torch.nonzero(keyed).flatten().split(chunk):
        xyz = torch.stack((idx // (Dy * Dz), (idx // Dz) % Dy, idx % Dz), 1)
        dist = ((xyz[:, None, :] - inst_xyz[None, :, :]) ** 2).sum(-1)
        wanted = occind2detind[occ[idx]]
        dist[inst_cls[None, :] != wanted[:, None]] = torch.iinfo(dist.dtype).max
        nearest = dist.argmin(1)
        has_instance = (inst_cls[None, :] == wanted[:, None]).any(1)
        out[idx[has_instance]] = inst_ids[nearest[has_instance]]
    return out.view(occ_pred.shape).to(torch.int32)
