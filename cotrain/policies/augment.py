"""Training-time image augmentation: random shift (DrQ, Kostrikov et al. 2020; the diffusion policy's random crop).

Each image is padded by s pixels on every side by repeating its border, then cropped back to its size at an offset
drawn uniformly from {0, …, 2s}² — i.e. shifted by (dy, dx) ∈ {−s, …, s}², border pixels filling the gap:
    out[b, i, j] = image[b, clamp(i + dy_b, 0, H − 1), clamp(j + dx_b, 0, W − 1)].
With ~100 demonstrations a small CNN otherwise memorises absolute pixel positions of each training scene and
misplaces the gripper on new object positions; shifting the whole frame keeps the gripper-object geometry intact
while making absolute positions unreliable. Only `sft_loss` in training mode applies it; `sample` / `evaluate`
never do (deterministic acting, bit-exact PPO ratios).
"""

from __future__ import annotations

import torch

from cotrain.policies.rng import generator_for


def random_shift(image: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (or float) [B, H, W, C] -> the same shape, each image shifted by its own random (dy, dx) in
    [−max_shift, max_shift]² with replicated borders. `max_shift` = 0 returns the input unchanged. Without a
    `generator`, the shifts come from the thread's CPU generator (`rng.generator_for`: torch's global one by default)."""
    if max_shift < 0:
        raise ValueError(f"random_shift: max_shift must be >= 0, got {max_shift}")
    if image.dim() != 4:
        raise ValueError(f"random_shift: expected an image batch [B, H, W, C], got shape {tuple(image.shape)}")
    if max_shift == 0:
        return image
    shift = torch.randint(-max_shift, max_shift + 1, (image.shape[0], 2),
                          generator=generator if generator is not None else generator_for("cpu"))  # CPU
    return shift_images(image, shift.to(image.device))


def shift_images(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """image [B, H, W, C] shifted by integer shift [B, 2] = (dy, dx): out[b, i, j] = image[b, i + dy, j + dx],
    indices clamped to the image (replicate padding)."""
    b, h, w, _ = image.shape
    rows = (torch.arange(h, device=image.device)[None, :] + shift[:, :1]).clamp(0, h - 1)  # [B, H]
    cols = (torch.arange(w, device=image.device)[None, :] + shift[:, 1:]).clamp(0, w - 1)  # [B, W]
    batch = torch.arange(b, device=image.device)[:, None, None]
    return image[batch, rows[:, :, None], cols[:, None, :]]
