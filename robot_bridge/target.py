"""The commanded target of a tracking controller (franky's impedance tracker), bounded. Pure numpy, no ROS.

A delta action moves the commanded target (`pose.apply_delta`); before the target reaches the tracker it passes, in
this order (m: the measured end-effector position, R_n: the nominal orientation):
    1. lead         p ← m + (p − m) · min(1, max_lead / ‖p − m‖)       bounds the spring force
    2. box          p ← clip(p, workspace_min, workspace_max)           last, so every target sent lies in the box
                    whatever the limiters before it did (with m inside the box, projecting onto the box never moves
                    p further from m, so 1 still holds; with m at most max_lead outside, ‖p − m‖ ≤ √2 · max_lead)
    3. orientation  R ← R_n · exp(min(1, max_orientation_error / θ) · log(R_nᵀ R)),  θ = angle(R_nᵀ R):
                    at most max_orientation_error from R_n, an absolute bound, so no sequence of steps can ratchet
A hold targets the measured pose put through 2 and 3 (an arm that overshot a box face is pulled back onto it).
An arm more than max_lead outside the box cannot be brought back by a bounded target: `OutsideWorkspace`.
The tracking error (target vs measured) beyond max_tracking_error / max_tracking_rotation means the arm does not
follow (a joint limit, a contact): the caller holds (`tracking_exceeded`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_bridge import pose
from robot_bridge.safety import SafetyLimits, limit_lead


class OutsideWorkspace(RuntimeError):
    """The measured end effector is further outside the workspace box than a bounded target can reach."""


@dataclass(frozen=True)
class TargetLimits:
    max_lead: float = 0.03
    """Largest distance the target may lead the measured position, m."""
    nominal_rpy: tuple[float, float, float] = (np.pi, 0.0, 0.0)
    """Nominal end-effector orientation, state convention (R = Rz(yaw) Ry(pitch) Rx(roll), as observation.state);
    (π, 0, 0) is the Franka's top-down home orientation."""
    max_orientation_error: float = 1.0
    """Largest angle between the target orientation and the nominal one, rad."""
    max_tracking_error: float = 0.045
    """Target this far from the measured position (m) -> hold: the arm is not following."""
    max_tracking_rotation: float = 0.35
    """Target orientation this far from the measured one (rad) -> hold."""

    def __post_init__(self) -> None:
        if np.shape(self.nominal_rpy) != (3,):
            raise ValueError(f"TargetLimits.nominal_rpy={self.nominal_rpy}: expected 3 angles")
        positive = ("max_lead", "max_orientation_error", "max_tracking_error", "max_tracking_rotation")
        bad = [f"{k}={getattr(self, k)}" for k in positive if not getattr(self, k) > 0]
        if bad or self.max_orientation_error > np.pi:
            raise ValueError(f"TargetLimits: {', '.join(bad) or 'max_orientation_error'} must be > 0 "
                             f"(max_orientation_error <= π)")

    @property
    def nominal_matrix(self) -> np.ndarray:
        return pose.state_rpy_to_matrix(self.nominal_rpy)


@dataclass(frozen=True)
class BoundedTarget:
    xyz: np.ndarray
    quat: np.ndarray
    """[x, y, z, w]"""
    reasons: tuple[str, ...]
    """'lead_limited', 'box_clipped', 'orientation_clipped'; empty when the target passed unchanged."""


def clamp_orientation(quat, nominal: np.ndarray, max_angle: float) -> tuple[np.ndarray, bool]:
    """`quat` rotated back towards `nominal` (matrix) onto the cone of `max_angle` around it; (quat, clamped?)."""
    rel = pose.rotation_vector(nominal.T @ pose.quat_to_matrix(quat))
    angle = float(np.linalg.norm(rel))
    if angle <= max_angle:
        return np.asarray(quat, dtype=np.float64), False
    return pose.matrix_to_quat(nominal @ pose.rotation_matrix(rel * (max_angle / angle))), True


def bound_target(xyz, quat, measured_xyz, box: SafetyLimits, lim: TargetLimits) -> BoundedTarget:
    """The target to send for a wanted target (`xyz`, `quat`) with the arm measured at `measured_xyz`."""
    measured = np.asarray(measured_xyz, dtype=np.float64)
    lo, hi = np.asarray(box.workspace_min, dtype=np.float64), np.asarray(box.workspace_max, dtype=np.float64)
    gap = float(np.linalg.norm(measured - np.clip(measured, lo, hi)))
    if gap > lim.max_lead:
        raise OutsideWorkspace(f"end effector {np.round(measured, 4).tolist()} is {gap * 1000:.0f} mm outside the "
                               f"workspace box (more than max_lead {lim.max_lead * 1000:.0f} mm): guide it back")
    reasons = []
    led = limit_lead(xyz, measured, lim.max_lead)
    if not np.array_equal(led, np.asarray(xyz, dtype=np.float64)):
        reasons.append("lead_limited")
    boxed = np.clip(led, lo, hi)
    if not np.array_equal(boxed, led):
        reasons.append("box_clipped")
    q, clamped = clamp_orientation(quat, lim.nominal_matrix, lim.max_orientation_error)
    if clamped:
        reasons.append("orientation_clipped")
    return BoundedTarget(boxed, q, tuple(reasons))


def tracking_exceeded(target_xyz, target_quat, measured_xyz, measured_quat, lim: TargetLimits) -> str:
    """Why the arm should hold ('' if it follows): the target is too far from the measured pose."""
    d = float(np.linalg.norm(np.asarray(target_xyz, dtype=np.float64) - np.asarray(measured_xyz, dtype=np.float64)))
    a = pose.angle_between(target_quat, measured_quat)
    if d > lim.max_tracking_error or a > lim.max_tracking_rotation:
        return f"tracking error {d * 1000:.0f} mm / {a:.2f} rad (limits {lim.max_tracking_error * 1000:.0f} mm / " \
               f"{lim.max_tracking_rotation:.2f} rad): the arm does not follow"
    return ""
