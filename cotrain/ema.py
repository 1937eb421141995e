"""Exponential moving average of a model's weights (Polyak averaging), as diffusion-policy and π0 training use it.

    θ_ema ← d_t · θ_ema + (1 − d_t) · θ,    d_t = min(decay, (1 + t) / (10 + t))

where t counts updates: the warm-up ramp keeps a short run's average close to its weights instead of to the
random initialisation. Every floating-point parameter and buffer is averaged; integer buffers are copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def ema_decay_at(updates: int, decay: float) -> float:
    """d_t after `updates` completed updates (0-based t of the next update)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class EMA:
    """Shadow copy of `model.state_dict()`; `update` after each optimizer step, `swapped_in` to use it."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA: decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self._lerp(model, 1.0 - ema_decay_at(self.updates, self.decay))
        self.updates += 1

    @torch.no_grad()
    def update_counted(self, model: nn.Module, updates: torch.Tensor) -> None:
        """`update` with t held in `updates` (a 0-d device tensor, incremented here) instead of `self.updates`: no
        host value is read, so the update can be captured in a CUDA graph and replayed (the caller writes the count
        back to `self.updates` before saving). The same arithmetic: d_t in float64, then 1 − d_t as the weight."""
        t = updates.to(torch.float64)
        d = torch.clamp((1.0 + t) / (10.0 + t), max=self.decay)
        self._lerp(model, (1.0 - d).to(torch.float32))
        updates.add_(1)

    def _lerp(self, model: nn.Module, weight: float | torch.Tensor) -> None:
        """shadow ← shadow + weight·(live − shadow) for floating-point tensors; integer buffers copied."""
        floats, live = [], []
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                floats.append(s)
                live.append(v.detach())
            else:
                s.copy_(v)
        if floats:  # one multi-tensor kernel per few tensors instead of one launch per tensor
            weights = weight if isinstance(weight, float) else [weight] * len(floats)
            torch._foreach_lerp_(floats, live, weights)  # s + (1 − d)(v − s) = d·s + (1 − d)·v

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """Inside the block `model` holds the averaged weights; yields the online (trained) weights, restored after."""
        online = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield online
        finally:
            model.load_state_dict(online)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("EMA.load_state_dict: the saved average holds other tensors than the model")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
