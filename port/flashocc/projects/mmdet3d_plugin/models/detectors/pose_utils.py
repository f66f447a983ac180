# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""Camera pose chains in float32 without losing the global translations.

ego2global poses carry translations of hundreds to thousands of metres, where
float32 steps are ~0.1 mm: inverting such a matrix in float32 and multiplying
it back loses precision. Subtracting the translations first (the inverse of a
rigid pose is R^T, -R^T t) keeps the relative pose exact to float32 rounding
of small numbers, without float64 (slow on the NPU).
"""
import torch


def relative_ego_poses(ego2globals: torch.Tensor, key_index: int = 0) -> torch.Tensor:
    """ego_i -> key ego, (..., N, 4, 4): inverse(ego2globals[key]) @ ego2globals[i]."""
    key = ego2globals[..., key_index:key_index + 1, :, :]
    key_rot_t = key[..., :3, :3].transpose(-1, -2)
    rot = key_rot_t @ ego2globals[..., :3, :3]
    trans = key_rot_t @ (ego2globals[..., :3, 3:] - key[..., :3, 3:])
    rel = torch.zeros_like(ego2globals)
    rel[..., :3, :3] = rot
    rel[..., :3, 3:] = trans
    rel[..., 3, 3] = 1
    return rel


def sensor_to_key_ego(sensor2egos: torch.Tensor, ego2globals: torch.Tensor,
                      key_index: int = 0) -> torch.Tensor:
    """sensor_i -> key ego, (..., N, 4, 4), in the dtype of the inputs."""
    return relative_ego_poses(ego2globals, key_index) @ sensor2egos
