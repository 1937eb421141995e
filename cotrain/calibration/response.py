"""End-effector response from commanded actions vs the end-effector's positions (what every real demo records).

Model: a controller that follows its target through a first-order lag. Per control step (dt) the displacement is an
exponential filter of the commands delayed by the latency k:

    Δp_t = β·Δp_{t−1} + g·a_{t−k},     β = exp(−dt/τ),

with τ the lag's time constant and g the tracking gain (1: the commanded Δxyz is reached in full). β and g come from
one linear least-squares fit over all episodes and x, y, z; the residual is 1 − R² of that fit. Friction and mass
do not show in free-space end-effector motion, so they are not identifiable from demos: randomise them instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cotrain.calibration.errors import CalibrationError


@dataclass(frozen=True)
class ResponseEstimate:
    beta: float
    """Fraction of the last displacement carried into the next step (0: no lag)."""
    gain: float
    """Displacement per unit of (delayed) command, before the lag."""
    residual: float
    """1 − R² of the fit."""
    dt: float

    @property
    def time_constant(self) -> float:
        """τ = −dt / ln β (s); 0 without lag (β ≤ 1e-6: faster than any control step can show)."""
        return 0.0 if self.beta <= 1e-6 else -self.dt / math.log(self.beta) if self.beta < 1 else math.inf


def estimate_response(commands: Sequence[np.ndarray], positions: Sequence[np.ndarray], latency: int,
                      dt: float = 0.1) -> ResponseEstimate:
    """Fit Δp_t = β·Δp_{t−1} + g·a_{t−latency} (xyz) over episodes of commands [T, ≥3] and states [T, ≥3]."""
    if len(commands) == 0 or len(commands) != len(positions):
        raise CalibrationError(f"response: need the same number (> 0) of command and state episodes, got "
                               f"{len(commands)} and {len(positions)}")
    rows, targets = [], []
    for i, (a, p) in enumerate(zip(commands, positions)):
        if np.ndim(a) != 2 or np.ndim(p) != 2 or np.shape(a)[1] < 3 or np.shape(p)[1] < 3 or len(a) != len(p):
            raise CalibrationError(f"response: episode {i}: actions {np.shape(a)} and states {np.shape(p)} must be "
                                   f"[T, >=3] with the same T")
        dp = np.diff(np.asarray(p, dtype=np.float64)[:, :3], axis=0)  # dp[t] = p[t+1] − p[t]
        a = np.asarray(a, dtype=np.float64)[:, :3]
        for t in range(max(1, latency), len(dp)):
            for axis in range(3):
                rows.append((dp[t - 1, axis], a[t - latency, axis]))
                targets.append(dp[t, axis])
    if len(rows) < 2:
        raise CalibrationError("response: episodes too short to fit (need more steps than the latency + 1)")
    x, y = np.asarray(rows), np.asarray(targets)
    (beta, gain), *_ = np.linalg.lstsq(x, y, rcond=None)
    total = float(((y - y.mean()) ** 2).sum())
    residual = float(((y - x @ np.array([beta, gain])) ** 2).sum()) / total if total > 0 else 1.0
    return ResponseEstimate(float(beta), float(gain), residual, dt)
