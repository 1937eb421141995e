"""Quaternion (w, x, y, z) ↔ roll-pitch-yaw, the convention of the state vector.

rpy are static-axis XYZ angles: R = Rz(yaw) · Ry(pitch) · Rx(roll) (ManiSkill's and franky's convention).
Vectorised over leading dimensions.
"""

from __future__ import annotations

import numpy as np


def quat_to_rpy(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.stack([roll, pitch, yaw], axis=-1)


def rpy_to_quat(rpy: np.ndarray) -> np.ndarray:
    rpy = np.asarray(rpy, dtype=np.float64)
    cr, cp, cy = (np.cos(rpy[..., i] / 2) for i in range(3))
    sr, sp, sy = (np.sin(rpy[..., i] / 2) for i in range(3))
    return np.stack(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ],
        axis=-1,
    )
