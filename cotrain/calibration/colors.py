"""Object colours read from real frames where the calibrated render says the object is, and the palette values the
twin renders them with.

The colour of an object is the per-channel median of the real pixels under its rendered mask (robust to the
object's shading edges and to mask misalignment of a pixel or two), eroded by one pixel so that edges blur in
neither the background nor the neighbouring objects.

The twin renders a palette colour c as some observed colour r_twin(c) under its own light and shading. `fit_palette`
moves c towards the real colour r_real per channel, re-rendering after each step: first c <- clip(c * r_real /
r_twin(c)), then, as the render is a power law r = k c^g rather than linear (the renderer's sRGB output: g near
1/2.2), c <- clip(c * (r_real / r_twin(c))^(1/g)) with g measured from the last two renders (a secant step in
log-log). Its residual is what is left of r_twin(c) - r_real; a channel clipped at 1 says the twin's light is too
dim for that colour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ColorEstimate:
    name: str
    """Palette name."""
    observed: tuple[float, float, float]
    """The real colour: median RGB in [0, 1] of the real frames under the twin's masks."""
    spread: float
    """Median absolute deviation of those real pixels."""
    rgba: tuple[float, float, float, float]
    """The palette value the twin renders the real colour with."""
    before: tuple[float, float, float]
    """The twin's render of the colour with its own palette value, under the same masks."""
    rendered: tuple[float, float, float]
    """The twin's render with `rgba`."""

    @property
    def residual(self) -> float:
        """Largest per-channel |render - real| with the estimate."""
        return float(np.max(np.abs(np.subtract(self.rendered, self.observed))))

    @property
    def error_before(self) -> float:
        """Largest per-channel |render - real| with the twin's own palette value."""
        return float(np.max(np.abs(np.subtract(self.before, self.observed))))


MIN_RENDERED = 1e-3
"""A rendered channel below this is not divided by (the update keeps its value)."""
EXPONENT_RANGE = (0.2, 2.0)
"""Render exponents g outside this are not trusted (g = 1 is used): a step too small to measure, or clipping."""
MIN_LOG_STEP = 0.02
"""A palette channel that moved less than this (in log) since the last render keeps g = 1."""


def palette_step(rgba, observed, rendered, previous: tuple | None = None) -> tuple[float, float, float, float]:
    """One update of the RGB of a palette value (alpha kept): c <- clip(c * (r_real / r_twin(c))^(1/g), 0, 1) per
    channel, g = 1 without `previous`, else the render exponent d log r / d log c measured against `previous`
    ((palette value, its render) of the last step)."""
    c, real, twin = np.asarray(rgba[:3], np.float64), np.asarray(observed), np.asarray(rendered)
    ratio = np.where(twin > MIN_RENDERED, real / np.maximum(twin, MIN_RENDERED), 1.0)
    g = np.ones(3)
    if previous is not None:
        c0, r0 = np.asarray(previous[0][:3], np.float64), np.asarray(previous[1])
        dc = np.log(np.maximum(c, 1e-6) / np.maximum(c0, 1e-6))
        dr = np.log(np.maximum(twin, MIN_RENDERED) / np.maximum(r0, MIN_RENDERED))
        measured = np.abs(dc) > MIN_LOG_STEP
        g = np.where(measured, dr / np.where(measured, dc, 1.0), 1.0)  # g = Δlog r / Δlog c
        g = np.where((g >= EXPONENT_RANGE[0]) & (g <= EXPONENT_RANGE[1]), g, 1.0)
    new = np.clip(c * ratio ** (1.0 / g), 0.0, 1.0)  # c <- clip(c · (r_real / r_twin(c))^(1/g))
    return (float(new[0]), float(new[1]), float(new[2]), float(rgba[3]))


def fit_palette(render: Callable[[dict], np.ndarray], real_frames: np.ndarray, masks: Mapping[str, np.ndarray],
                palette: Mapping[str, tuple], iterations: int = 3) -> list[ColorEstimate]:
    """The palette values of the colours in `masks` that make the twin's render match the real frames.

    render(palette) -> the twin's rgb uint8 [N, H, W, 3] of the N scenes with that palette; real_frames uint8
    [N, H, W, 3] the real frames of the same scenes; masks[name] bool [N, H, W]: where the twin's render shows the
    object of that palette colour in each scene (all False where it is not there). Renders iterations + 1 times."""
    observed = {name: object_color(real_frames, m, name) for name, m in masks.items()}
    current = {name: tuple(palette[name]) for name in masks}
    first: dict[str, tuple] = {}
    last: dict[str, tuple] = {}
    for i in range(iterations + 1):
        rgb = render({**palette, **current})
        rendered = {name: object_color(rgb, m, f"{name} (twin render)")[0] for name, m in masks.items()}
        first = first or rendered
        if i < iterations:
            step = {name: palette_step(current[name], observed[name][0], rendered[name], last.get(name))
                    for name in masks}
            last = {name: (current[name], rendered[name]) for name in masks}
            current = step
    return [ColorEstimate(name=name, observed=observed[name][0], spread=observed[name][1], rgba=current[name],
                          before=first[name], rendered=rendered[name]) for name in masks]
