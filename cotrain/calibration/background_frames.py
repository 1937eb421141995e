"""The background frames `python -m cotrain.calibrate` reads (`background_dir`): PNGs of the empty scene from the
robot's camera, robot at home, in one folder, written all at once."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np


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
