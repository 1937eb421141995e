"""The safety filter between any action source (policy, teleop) and the arm. Pure functions, no ROS.

An action is the spec's 7-vector (Δx, Δy, Δz in m; Δroll, Δpitch, Δyaw in rad; gripper −1 close … +1 open), applied
to the *measured* end-effector pose (see `pose.py`). `filter_action` returns the action actually sent, in the same
units, together with the reasons it differs from the request, so the node can log them and the recorder stores
what the arm really did. Order of the checks:

    1. shape / NaN / Inf      -> reject: hold (zero motion, gripper keeps its last command)
    2. translation step       Δp ← Δp · min(1, max_translation / ‖Δp‖₂)
    3. rotation step          Δr ← Δr · min(1, max_rotation / ‖Δr‖₂)       (ManiSkill clips rotation by norm too)
    4. workspace box          p + Δp clipped per axis to [min(lo, p), max(hi, p)]: inside the box a step never leaves
                              it; outside (e.g. after a hand-guided move) it may only move back towards it
    5. gripper range          g ← clip(g, gripper_min, gripper_max)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTION_DIM = 7


@dataclass(frozen=True)
class SafetyLimits:
    workspace_min: tuple[float, float, float] = (0.25, -0.35, 0.02)
    """Lower corner (x, y, z) in m of the box the end-effector target must stay in (robot base frame)."""
    workspace_max: tuple[float, float, float] = (0.75, 0.35, 0.60)
    """Upper corner (x, y, z) in m."""
    max_translation: float = 0.02
    """Largest ‖Δxyz‖₂ per control step, m."""
    max_rotation: float = 0.10
    """Largest ‖Δrpy‖₂ per control step, rad."""
    gripper_min: float = -1.0
    """Lowest gripper command (−1 = close)."""
    gripper_max: float = 1.0
    """Highest gripper command (+1 = open)."""

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min), np.asarray(self.workspace_max)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise ValueError(f"SafetyLimits.workspace_min {self.workspace_min} must be 3 values below workspace_max {self.workspace_max}")
        if not (self.max_translation > 0 and self.max_rotation > 0):
            raise ValueError(f"SafetyLimits.max_translation={self.max_translation} and max_rotation={self.max_rotation} must be > 0")
        if not self.gripper_min <= self.gripper_max:
            raise ValueError(f"SafetyLimits.gripper_min={self.gripper_min} must be <= gripper_max={self.gripper_max}")


@dataclass(frozen=True)
class SafeCommand:
    action: np.ndarray
    """float64[7]: the action actually sent."""
    reasons: tuple[str, ...]
    """Why it differs from the request: 'rejected:<why>', 'translation_scaled', 'rotation_scaled', 'workspace_clipped',
    'gripper_clipped'. Empty when the request passed unchanged."""

    @property
    def rejected(self) -> bool:
        return any(r.startswith("rejected") for r in self.reasons)


def hold_action(gripper: float) -> np.ndarray:
    """Zero motion, gripper unchanged: what the arm does when it must not move."""
    a = np.zeros(ACTION_DIM)
    a[6] = gripper
    return a


def scale_to_norm(v: np.ndarray, max_norm: float) -> np.ndarray:
    """v · min(1, max_norm / ‖v‖₂): keeps the direction, caps the length."""
    n = float(np.linalg.norm(v))
    return v if n <= max_norm else v * (max_norm / n)


def clip_to_workspace(xyz: np.ndarray, dxyz: np.ndarray, limits: SafetyLimits) -> np.ndarray:
    """Δp such that p + Δp lies in [min(lo, p), max(hi, p)] per axis (never further out than p already is)."""
    lo = np.minimum(np.asarray(limits.workspace_min, dtype=np.float64), xyz)
    hi = np.maximum(np.asarray(limits.workspace_max, dtype=np.float64), xyz)
    target = xyz + dxyz
    outside = (target < lo) | (target > hi)
    return np.where(outside, np.clip(target, lo, hi) - xyz, dxyz)  # untouched axes keep their exact value


def filter_action(action, ee_xyz: np.ndarray, last_gripper: float, limits: SafetyLimits) -> SafeCommand:
    """The action to send for a requested `action` at the measured end-effector position `ee_xyz`.

    `last_gripper` is the gripper command last sent; a rejected action holds it.
    """
    ee_xyz = np.asarray(ee_xyz, dtype=np.float64)
    if ee_xyz.shape != (3,) or not np.all(np.isfinite(ee_xyz)):
        return SafeCommand(hold_action(last_gripper), (f"rejected:bad_state {ee_xyz.tolist()}",))
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        return SafeCommand(hold_action(last_gripper), ("rejected:not_numeric",))
    if a.shape != (ACTION_DIM,):
        return SafeCommand(hold_action(last_gripper), (f"rejected:shape {a.shape}",))
    if not np.all(np.isfinite(a)):
        return SafeCommand(hold_action(last_gripper), ("rejected:non_finite",))

    reasons: list[str] = []
    dxyz = scale_to_norm(a[0:3], limits.max_translation)
    if not np.array_equal(dxyz, a[0:3]):
        reasons.append("translation_scaled")
    drpy = scale_to_norm(a[3:6], limits.max_rotation)
    if not np.array_equal(drpy, a[3:6]):
        reasons.append("rotation_scaled")
    clipped = clip_to_workspace(ee_xyz, dxyz, limits)
    if not np.array_equal(clipped, dxyz):
        reasons.append("workspace_clipped")
    gripper = float(np.clip(a[6], limits.gripper_min, limits.gripper_max))
    if gripper != a[6]:
        reasons.append("gripper_clipped")
    return SafeCommand(np.concatenate([clipped, drpy, [gripper]]), tuple(reasons))


def limit_lead(target_xyz: np.ndarray, measured_xyz: np.ndarray, max_lead: float) -> np.ndarray:
    """Target pulled back to at most `max_lead` from the measured position (bounds the tracker's spring force)."""
    measured_xyz = np.asarray(measured_xyz, dtype=np.float64)
    return measured_xyz + scale_to_norm(np.asarray(target_xyz, dtype=np.float64) - measured_xyz, max_lead)


def within_limits(ee_xyz: np.ndarray, sent: np.ndarray, limits: SafetyLimits, tol: float = 1e-9) -> bool:
    """True if `sent` is an action `filter_action` could have produced at `ee_xyz` (used by tests and monitors)."""
    sent = np.asarray(sent, dtype=np.float64)
    if sent.shape != (ACTION_DIM,) or not np.all(np.isfinite(sent)):
        return False
    ee_xyz = np.asarray(ee_xyz, dtype=np.float64)
    lo = np.minimum(np.asarray(limits.workspace_min), ee_xyz) - tol
    hi = np.maximum(np.asarray(limits.workspace_max), ee_xyz) + tol
    target = ee_xyz + sent[0:3]
    return bool(
        np.linalg.norm(sent[0:3]) <= limits.max_translation + tol
        and np.linalg.norm(sent[3:6]) <= limits.max_rotation + tol
        and np.all(target >= lo)
        and np.all(target <= hi)
        and limits.gripper_min - tol <= sent[6] <= limits.gripper_max + tol
    )
