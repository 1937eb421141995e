"""Object colours read from real frames where the calibrated render says the object is.

The colour of an object is the per-channel median of the real pixels under its rendered mask (robust to the
object's shading edges and to mask misalignment of a pixel or two), eroded by one pixel so that edges blur in
neither the background nor the neighbouring objects.
"""

from __future__ import annotations

import numpy as np

from cotrain.calibration.errors import CalibrationError


def erode(mask: np.ndarray) -> np.ndarray:
    """A boolean mask [H, W] minus its border pixels (4-neighbourhood)."""
    m = np.pad(mask, 1, constant_values=False)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def object_color(frames: np.ndarray, masks: np.ndarray, name: str = "object",
                 min_pixels: int = 4) -> tuple[tuple[float, float, float], float]:
    """(median RGB in [0, 1], spread) of the real frames [N, H, W, 3] under masks [N, H, W] (eroded by 1 pixel).

    The spread is the median absolute deviation of those pixels (in [0, 1]), the estimate's residual.
    """
    frames, masks = np.asarray(frames), np.asarray(masks, dtype=bool)
    if frames.shape[:-1] != masks.shape:
        raise CalibrationError(f"colour of {name}: frames {list(frames.shape)} and masks {list(masks.shape)} differ")
    inner = np.stack([erode(m) for m in masks]) if masks.ndim == 3 else erode(masks)
    pixels = frames[inner].astype(np.float64) / 255.0
    if len(pixels) < min_pixels:
        raise CalibrationError(f"colour of {name}: only {len(pixels)} pixels under the rendered mask "
                               f"(need {min_pixels}); is the object in view?")
    rgb = np.median(pixels, axis=0)
    spread = float(np.median(np.abs(pixels - rgb)))
    return (float(rgb[0]), float(rgb[1]), float(rgb[2])), spread
