"""Normalisation the policy owns: state by mean/std (or, `state_mode="min_max"`, by min/max to [-1, 1] like the
actions), actions by min/max to [-1, 1].

Why min/max for the state can matter: a nearly constant dimension (the TCP's roll/pitch in top-down demos, std
≈ 0.005 rad, set by the reset's joint noise) gets a tiny std, so mean/std blows its noise up to ±10 units; the
network can then fingerprint each demo by it. Min/max maps its whole range to [-1, 1] instead.

Stats arrive in the data layer's format, per-dimension tensors:
    {"observation.state": {"mean", "std", "min", "max"}, "action": {"mean", "std", "min", "max"}}
They are kept as buffers, so they travel with the weights and `stats_dict()` gives them back unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from cotrain.data.spec import ACTION_KEY, STATE_KEY, FeatureSpec

STAT_NAMES = ("mean", "std", "min", "max")
STD_EPS = 1e-6
"""Floor on std and on the half range: a constant dimension (e.g. Δroll always 0 in scripted demos) maps to 0."""

Stats = dict[str, dict[str, torch.Tensor]]


def check_stats(stats: Any, spec: FeatureSpec) -> Stats:
    """Validate `stats` against `spec` and return them as float32 tensors; one clear error otherwise."""
    dims = {STATE_KEY: spec.state_dim, ACTION_KEY: spec.action_dim}
    if not isinstance(stats, dict):
        raise TypeError(f"norm stats: expected a dict with keys {sorted(dims)}, got {type(stats).__name__}")
    out: Stats = {}
    for key, dim in dims.items():
        if key not in stats:
            raise KeyError(f"norm stats: missing key {key!r} (have {sorted(stats)})")
        out[key] = {}
        for name in STAT_NAMES:
            if name not in stats[key]:
                raise KeyError(f"norm stats[{key!r}]: missing {name!r} (have {sorted(stats[key])})")
            value = torch.as_tensor(stats[key][name], dtype=torch.float32).detach().cpu().reshape(-1).clone()
            if value.shape != (dim,):
                raise ValueError(f"norm stats[{key!r}][{name!r}]: expected shape ({dim},), got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"norm stats[{key!r}][{name!r}]: non-finite values {value.tolist()}")
            out[key][name] = value
        if (out[key]["max"] < out[key]["min"]).any():
            raise ValueError(f"norm stats[{key!r}]: max < min in some dimension")
    return out


class Normalizer(nn.Module):
    """state -> (state - mean) / std (or min/max like the action);  action <-> (action - center) / half_range with
    center, half_range from min/max."""

    def __init__(self, stats: Any, spec: FeatureSpec, state_mode: Literal["mean_std", "min_max"] = "mean_std") -> None:
        super().__init__()
        if state_mode not in ("mean_std", "min_max"):
            raise ValueError(f"Normalizer: state_mode must be 'mean_std' or 'min_max', got {state_mode!r}")
        self.state_mode = state_mode
        checked = check_stats(stats, spec)
        for key, prefix in ((STATE_KEY, "state"), (ACTION_KEY, "action")):
            for name in STAT_NAMES:
                self.register_buffer(f"{prefix}_{name}", checked[key][name])

    def stats_dict(self) -> Stats:
        return {
            key: {name: getattr(self, f"{prefix}_{name}").detach().cpu().clone() for name in STAT_NAMES}
            for key, prefix in ((STATE_KEY, "state"), (ACTION_KEY, "action"))
        }

    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        if self.state_mode == "min_max":
            center, half_range = _center_half_range(self.state_min, self.state_max)
            return (state - center) / half_range
        return (state - self.state_mean) / self.state_std.clamp_min(STD_EPS)

    def _center_half_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _center_half_range(self.action_min, self.action_max)

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """a_n = (a - (max + min)/2) / ((max - min)/2): [min, max] -> [-1, 1]."""
        center, half_range = self._center_half_range()
        return (action - center) / half_range

    def unnormalize_action(self, action_n: torch.Tensor) -> torch.Tensor:
        center, half_range = self._center_half_range()
        return action_n * half_range + center


def _center_half_range(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((max + min)/2, (max − min)/2), a zero half range replaced by 1 (a constant dimension maps to 0)."""
    center, half_range = (hi + lo) / 2, (hi - lo) / 2
    return center, torch.where(half_range < STD_EPS, torch.ones_like(half_range), half_range)
