"""Checking and converting the raw observation every policy receives (see `cotrain.policies.base`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec


def obs_tensors(obs: dict[str, Any], spec: FeatureSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(image uint8 [B, h, w, 3] resized to the spec, state float32 [B, S], tasks) on `device`; one clear error
    naming the key and the shape for anything else."""
    for key in (IMAGE_KEY, STATE_KEY, TASK_KEY):
        if key not in obs:
            raise KeyError(f"obs: missing key {key!r} (have {sorted(obs)})")
    image = torch.as_tensor(obs[IMAGE_KEY], device=device)
    state = torch.as_tensor(obs[STATE_KEY], device=device)
    tasks = obs[TASK_KEY]
    if image.dtype != torch.uint8 or image.dim() != 4 or image.shape[-1] != 3:
        raise ValueError(f"obs[{IMAGE_KEY!r}]: expected uint8 [B, H, W, 3], got {image.dtype} {tuple(image.shape)}")
    b = image.shape[0]
    if state.dim() != 2 or state.shape != (b, spec.state_dim) or not state.is_floating_point():
        raise ValueError(f"obs[{STATE_KEY!r}]: expected float [{b}, {spec.state_dim}], got {state.dtype} {tuple(state.shape)}")
    if isinstance(tasks, str) or len(tasks) != b:
        raise ValueError(f"obs[{TASK_KEY!r}]: expected a list of {b} strings, got {type(tasks).__name__} "
                         f"of length {len(tasks)}")
    if image.shape[1:3] != (spec.image_height, spec.image_width):
        image = F.interpolate(image.permute(0, 3, 1, 2).float(), size=(spec.image_height, spec.image_width),
                              mode="bilinear", antialias=True, align_corners=False)
        image = image.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return image, state.float(), list(tasks)


def action_targets(batch: dict[str, Any], spec: FeatureSpec, chunk_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(actions float32 [B, H, A], is_pad bool [B, H]) from a training batch."""
    for key in (ACTION_KEY, "action_is_pad"):
        if key not in batch:
            raise KeyError(f"batch: missing key {key!r} (have {sorted(batch)})")
    actions = torch.as_tensor(batch[ACTION_KEY], device=device).float()
    is_pad = torch.as_tensor(batch["action_is_pad"], device=device)
    b = actions.shape[0]
    if actions.shape != (b, chunk_size, spec.action_dim):
        raise ValueError(f"batch[{ACTION_KEY!r}]: expected [B, {chunk_size}, {spec.action_dim}], got {tuple(actions.shape)}")
    if is_pad.shape != (b, chunk_size) or is_pad.dtype != torch.bool:
        raise ValueError(f"batch['action_is_pad']: expected bool [{b}, {chunk_size}], got {is_pad.dtype} {tuple(is_pad.shape)}")
    return actions, is_pad
