"""Action latency from commanded actions vs the end-effector's response (what every real demo records).

With a latency of k control steps, the end-effector displacement between steps t and t+1 follows the command of
step t−k. `estimate_latency` picks the k in 0..max_lag whose lagged commands correlate best with the measured
displacements (normalised cross-correlation of Δxyz, summed over episodes): exact for integer-step latency when the
commands vary; the residual is 1 − that correlation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cotrain.calibration.errors import CalibrationError


@dataclass(frozen=True)
class LatencyEstimate:
    steps: int
    """Control steps between a command and the end-effector's response."""
    correlation: float
    """Normalised cross-correlation at `steps` (1: the displacement is a scaled copy of the lagged commands)."""
    correlations: tuple[float, ...]
    """The correlation at every lag 0..max_lag."""

    @property
    def residual(self) -> float:
        return 1.0 - self.correlation


def lag_correlation(commands: Sequence[np.ndarray], positions: Sequence[np.ndarray], lag: int) -> float:
    """Σ⟨a_{t−lag}, Δp_t⟩ / √(Σ|a_{t−lag}|² · Σ|Δp_t|²) over all episodes, Δp_t = p_{t+1} − p_t (xyz only)."""
    dot = aa = pp = 0.0
    for a, p in zip(commands, positions):
        dp = np.diff(np.asarray(p, dtype=np.float64)[:, :3], axis=0)  # [T-1, 3]: response to step t
        a = np.asarray(a, dtype=np.float64)[: len(dp), :3]
        if len(a) <= lag:
            continue
        lagged, response = a[: len(a) - lag], dp[lag: len(a)]
        dot += float((lagged * response).sum())
        aa += float((lagged**2).sum())
        pp += float((response**2).sum())
    return dot / np.sqrt(aa * pp) if aa > 0 and pp > 0 else 0.0


def estimate_latency(commands: Sequence[np.ndarray], positions: Sequence[np.ndarray], max_lag: int = 5
                     ) -> LatencyEstimate:
    """The integer latency (control steps) from per-episode commanded actions [T, ≥3] and states [T, ≥3]."""
    if len(commands) == 0 or len(commands) != len(positions):
        raise CalibrationError(f"latency: need the same number (> 0) of command and state episodes, got "
                               f"{len(commands)} and {len(positions)}")
    for i, (a, p) in enumerate(zip(commands, positions)):
        if np.ndim(a) != 2 or np.ndim(p) != 2 or np.shape(a)[1] < 3 or np.shape(p)[1] < 3 or len(a) != len(p):
            raise CalibrationError(f"latency: episode {i}: actions {np.shape(a)} and states {np.shape(p)} must be "
                                   f"[T, >=3] with the same T")
    corr = tuple(lag_correlation(commands, positions, k) for k in range(max_lag + 1))
    best = int(np.argmax(corr))
    return LatencyEstimate(best, corr[best], corr)
