"""What `python -m cotrain.calibrate` reads, captured on the robot (plain logic, no ROS):
- background frames: camera frames of the empty scene with the robot at home, as PNGs in one folder
  (`background_dir`), written all at once (`cotrain.calibration.background_frames.save_frames`);
- a calibration motion: a short scripted excitation of the end-effector (`calibration_motion`), executed through the
  bridge and recorded by the recorder like any episode (states and commanded actions: `dataset`, for the latency).
"""

from __future__ import annotations

import numpy as np


def calibration_motion(steps: int, amplitude: float, seed: int) -> np.ndarray:
    """float32 [steps, 7]: Δxyz steps of ±`amplitude` m on one random axis at a time (held 1–3 steps, so the command
    varies and a latency is identifiable), then the same steps reversed and negated: the end-effector returns to
    where it started. Orientation unchanged, gripper open. `steps` must be even."""
    if steps < 2 or steps % 2 or not amplitude > 0:
        raise ValueError(f"calibration motion: steps={steps} must be even and >= 2, amplitude={amplitude} > 0")
    rng = np.random.default_rng(seed)
    half = np.zeros((steps // 2, 3))
    t = 0
    while t < len(half):
        hold = int(rng.integers(1, 4))
        half[t:t + hold, int(rng.integers(3))] = amplitude * rng.choice([-1.0, 1.0])
        t += hold
    xyz = np.concatenate([half, -half[::-1]])
    out = np.zeros((steps, 7), dtype=np.float32)
    out[:, :3], out[:, 6] = xyz, 1.0
    return out
