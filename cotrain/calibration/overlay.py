"""Overlay PNGs: the real frame blended with a render, for checking camera alignment by eye (before / after)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cotrain.calibration.errors import CalibrationError
from cotrain.runtime import atomic_path


def blend(real: np.ndarray, render: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(1 − alpha)·real + alpha·render, uint8 [H, W, 3] (alpha 0.5: ManiSkill's greenscreen debug mode)."""
    if real.shape != render.shape:
        raise CalibrationError(f"overlay: real frame {list(real.shape)} and render {list(render.shape)} differ")
    mixed = (1.0 - alpha) * real.astype(np.float64) + alpha * render.astype(np.float64)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def write_overlay(path: str | Path, real: np.ndarray, render: np.ndarray, alpha: float = 0.5) -> Path:
    """Write `blend(real, render)` as a PNG, never half a file."""
    image = Image.fromarray(blend(real, render, alpha))
    with atomic_path(Path(path)) as tmp:
        image.save(tmp)
    return Path(path)
