"""The calibration motion: frames from the robot's camera with the arm at a few scripted joint states, recorded with
those joint states, the scene empty. What `cotrain.calibration.silhouette` fits the camera to.

File: one `.npz` with `frames` (uint8 [N, H, W, 3]) and `qpos` (float [N, 7] arm joints, or [N, 9] with the two
finger joints), frame i taken at joint state i.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cotrain.calibration.errors import CalibrationError
from cotrain.envs.robot import REST_QPOS
from cotrain.runtime import atomic_path

POSE_OFFSETS = (
    (0.4, 0.3, 0.0, 0.3, 0.0, -0.2, 0.0),
    (0.0, 0.6, 0.0, 0.6, 0.0, -0.3, 0.0),
    (-0.5, 0.5, 0.0, 0.2, 0.0, 0.3, 0.5),
    (0.2, 0.45, 0.3, 0.7, -0.3, -0.5, -0.4),
    (0.0, 0.7, 0.0, 1.0, 0.0, -0.4, 0.0),
    (0.35, 0.7, 0.0, 1.0, 0.0, -0.4, 0.0),
    (0.2, 0.9, 0.0, 1.4, 0.0, -0.8, 0.0),
)
"""Arm joint offsets (rad) from home of the scripted motion: the hand left and right, near the camera and far from it, low and high (every pose keeps the hand above the table)."""


def calibration_qpos() -> np.ndarray:
    """The scripted motion's arm joint targets [N, 7] (home + POSE_OFFSETS)."""
    return np.asarray(REST_QPOS[:7]) + np.asarray(POSE_OFFSETS)


@dataclass(frozen=True)
class CalibrationMotion:
    frames: np.ndarray
    """uint8 [N, H, W, 3]."""
    qpos: np.ndarray
    """float64 [N, 7] or [N, 9]: the joint state at each frame."""


def check_motion(frames: np.ndarray, qpos: np.ndarray, height: int, width: int, source: str) -> CalibrationMotion:
    """The motion if frames are [N, height, width, 3] uint8 and qpos [N, 7 | 9], else one CalibrationError."""
    frames, qpos = np.asarray(frames), np.asarray(qpos)
    if frames.ndim != 4 or len(frames) == 0:
        raise CalibrationError(f"{source}: frames must be [N > 0, {height}, {width}, 3], got {list(frames.shape)}")
    if frames.shape[1:] != (height, width, 3) or frames.dtype != np.uint8:
        raise CalibrationError(f"{source}: frames must be uint8 [N, {height}, {width}, 3] (the camera's size), got "
                               f"{frames.dtype} {list(frames.shape)}")
    if qpos.ndim != 2 or qpos.shape[0] != len(frames) or qpos.shape[1] not in (7, 9):
        raise CalibrationError(f"{source}: qpos must be [{len(frames)}, 7 or 9] (one joint state per frame), got "
                               f"{list(qpos.shape)}")
    if not np.isfinite(qpos).all():
        raise CalibrationError(f"{source}: qpos has non-finite values")
    return CalibrationMotion(frames, qpos.astype(np.float64))


def load_motion(path: str | Path, height: int, width: int) -> CalibrationMotion:
    """Read a calibration motion `.npz` (see the module docstring); anything missing or misshapen is one error."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"motion: {path} is not a file")
    with np.load(path) as data:
        missing = [k for k in ("frames", "qpos") if k not in data]
        if missing:
            raise CalibrationError(f"motion: {path} has no {' or '.join(missing)} (keys: {sorted(data.keys())})")
        return check_motion(data["frames"], data["qpos"], height, width, f"motion: {path}")


def save_motion(path: str | Path, frames: np.ndarray, qpos: np.ndarray) -> Path:
    """Write a calibration motion `.npz`, never half a file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, frames=np.asarray(frames, dtype=np.uint8), qpos=np.asarray(qpos, np.float64))
    return path
