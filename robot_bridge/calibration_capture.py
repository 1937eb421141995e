"""What `python -m cotrain.calibrate` reads, captured on the robot (plain logic, no ROS):
- background frames: camera frames of the empty scene with the robot at home, as PNGs in one folder
  (`background_dir`), written all at once (`save_frames`);
- a calibration motion: a short scripted excitation of the end-effector (`calibration_motion`), executed through the
  bridge and recorded by the recorder like any episode (states and commanded actions: `dataset`, for the latency).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

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


def save_frames(frames: list[np.ndarray], folder: str | Path) -> list[Path]:
    """Write uint8 HxWx3 frames as folder/frame_000.png …; the folder appears complete or not at all (an existing
    one is replaced)."""
    from PIL import Image

    if not frames:
        raise ValueError("background capture: no frames")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for k, frame in enumerate(frames):
            Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(tmp / f"frame_{k:03d}.png")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(folder.glob("*.png"))
