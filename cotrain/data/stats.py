"""Normalisation statistics over a mixture of datasets, stored with the checkpoint.

For a mixture that draws a fraction w_i of its samples from dataset i, the statistics are those of the mixture
distribution the policy is trained on:
    mean = Σ w_i mean_i,    var = Σ w_i (var_i + mean_i²) − mean²,    min/max over datasets with w_i > 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cotrain.data.spec import ACTION_KEY, STATE_KEY

STAT_KEYS = (STATE_KEY, ACTION_KEY)
STAT_NAMES = ("mean", "std", "min", "max")


@dataclass
class NormStats:
    """Per-dimension mean/std/min/max of the state and the action, as float32 arrays."""

    stats: dict[str, dict[str, np.ndarray]]

    def __post_init__(self) -> None:
        for key in STAT_KEYS:
            if key not in self.stats:
                raise ValueError(f"NormStats: missing '{key}'")
            for name in STAT_NAMES:
                if name not in self.stats[key]:
                    raise ValueError(f"NormStats['{key}']: missing '{name}'")
                self.stats[key][name] = np.asarray(self.stats[key][name], dtype=np.float32)

    def __getitem__(self, key: str) -> dict[str, np.ndarray]:
        return self.stats[key]

    @classmethod
    def from_arrays(cls, weighted: list[tuple[float, dict[str, np.ndarray]]]) -> "NormStats":
        """`weighted`: (w_i, {STATE_KEY: [N_i, S], ACTION_KEY: [N_i, A]}) with Σ w_i = 1 over w_i > 0."""
        parts = [(w, arrays) for w, arrays in weighted if w > 0]
        if not parts:
            raise ValueError("NormStats: no dataset with positive weight")
        total = sum(w for w, _ in parts)
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in STAT_KEYS:
            means = [arrays[key].astype(np.float64).mean(0) for _, arrays in parts]
            second = [(arrays[key].astype(np.float64) ** 2).mean(0) for _, arrays in parts]
            mean = sum(w / total * m for (w, _), m in zip(parts, means))
            var = sum(w / total * s for (w, _), s in zip(parts, second)) - mean**2
            out[key] = {
                "mean": mean,
                "std": np.sqrt(np.maximum(var, 0.0)),
                "min": np.min([arrays[key].min(0) for _, arrays in parts], axis=0),
                "max": np.max([arrays[key].max(0) for _, arrays in parts], axis=0),
            }
        return cls(out)

    def to_dict(self) -> dict:
        return {k: {n: v.tolist() for n, v in d.items()} for k, d in self.stats.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        return cls({k: {n: np.asarray(v, dtype=np.float32) for n, v in sub.items()} for k, sub in d.items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "NormStats":
        return cls.from_dict(json.loads(Path(path).read_text()))


def batch_stats(batch: dict) -> dict[str, dict]:
    """Per-dimension mean / std / min / max of one collated batch's state and action tensors (over every leading
    dim): the stats a policy needs when it is built without a dataset (tests, benchmarks, experiments)."""
    out = {}
    for key in STAT_KEYS:
        x = batch[key].reshape(-1, batch[key].shape[-1])
        out[key] = {"mean": x.mean(0), "std": x.std(0), "min": x.min(0).values, "max": x.max(0).values}
    return out


def box_stats(state_dim: int, action_dim: int, action_limit: float) -> dict[str, dict]:
    """Stats of a unit box for the state (mean 0, std 1, range ±1) and of ±`action_limit` for the action (mean 0,
    std 1): a randomly initialised policy built for benchmarks, where only shapes and timing matter."""
    def box(dim: int, limit: float) -> dict:
        return {"mean": np.zeros(dim), "std": np.ones(dim), "min": -limit * np.ones(dim), "max": limit * np.ones(dim)}

    return {STATE_KEY: box(state_dim, 1.0), ACTION_KEY: box(action_dim, action_limit)}
