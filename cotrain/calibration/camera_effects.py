"""Camera effects of the real-proxy (a simulation of a real camera): lens, sensor and image-processing effects that
no twin parameter reproduces, as pure numpy functions on uint8 H×W×3 frames.

The pipeline follows the light: lens (radial distortion, vignetting, blur) → sensor (Gaussian read noise, seeded
per episode and step) → image processing (white balance gains, gamma) → 8-bit quantisation. Every effect at its zero
setting returns the frame unchanged, so a domain without effects renders exactly as before.

Coordinates: `radius` is the distance of a pixel centre from the image centre divided by the half-diagonal, so the
corners are at ≈ 1 and the centre at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cotrain.errors import ConfigError

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class CameraEffects:
    """The camera effects of one domain (all zero / one: none; the twin has none)."""

    noise_std: float = 0.0
    """Std of Gaussian sensor noise, as a fraction of full scale (0.01 ≈ 2.5 grey levels), drawn per episode seed
    and control step."""
    blur_sigma: float = 0.0
    """Std (pixels) of a Gaussian blur (slight defocus / lens softness)."""
    white_balance: Vec3 = (1.0, 1.0, 1.0)
    """Gains on R, G, B (a warm camera: R > 1, B < 1)."""
    gamma: float = 1.0
    """Tone curve out = 255·(in/255)^gamma, after white balance (< 1 brightens the mid-tones)."""
    vignette: float = 0.0
    """Brightness falls as 1 − vignette·radius² (radius 1 at the corners)."""
    distortion_k1: float = 0.0
    """Radial distortion: the output pixel at normalised position p shows the ideal image at p·(1 + k1·|p|²)
    (k1 > 0: barrel, straight lines bow outwards)."""

    def __post_init__(self) -> None:
        if self.noise_std < 0 or self.blur_sigma < 0:
            raise ConfigError(f"camera_effects: noise_std and blur_sigma must be >= 0, got {self.noise_std}, "
                              f"{self.blur_sigma}")
        if self.gamma <= 0 or min(self.white_balance) <= 0:
            raise ConfigError(f"camera_effects: gamma and white_balance must be positive, got {self.gamma}, "
                              f"{self.white_balance}")
        if not 0 <= self.vignette < 1:
            raise ConfigError(f"camera_effects: vignette must be in [0, 1), got {self.vignette}")


def normalised_radius(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, radius) of every pixel centre, [H, W] each: offsets from the image centre over the half-diagonal."""
    half_diag = 0.5 * np.hypot(height, width)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    u = (u + 0.5 - width / 2) / half_diag
    v = (v + 0.5 - height / 2) / half_diag
    return u, v, np.hypot(u, v)


def vignette(image: np.ndarray, strength: float) -> np.ndarray:
    """Multiply by 1 − strength·radius² (float in, float out)."""
    if strength == 0:
        return image
    _, _, r = normalised_radius(*image.shape[:2])
    return image * (1.0 - strength * r**2)[..., None]


def radial_distortion(image: np.ndarray, k1: float) -> np.ndarray:
    """Resample so that the pixel at normalised p shows the input at p·(1 + k1·|p|²) (bilinear, edge clamped)."""
    if k1 == 0:
        return image
    h, w = image.shape[:2]
    u, v, r = normalised_radius(h, w)
    half_diag = 0.5 * np.hypot(h, w)
    scale = 1.0 + k1 * r**2
    x = u * scale * half_diag + w / 2 - 0.5  # source pixel coordinates (pixel centres at integers)
    y = v * scale * half_diag + h / 2 - 0.5
    return bilinear_sample(image, x, y)


def bilinear_sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """image[y, x] at fractional coordinates, clamped to the border."""
    h, w = image.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (kernel radius ⌈3σ⌉, edges replicated; weights sum to 1)."""
    if sigma == 0:
        return image
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(out.ndim)], mode="edge")
        n = out.shape[axis]
        out = sum(k * np.take(padded, np.arange(i, i + n), axis=axis) for i, k in enumerate(kernel))
    return out


def sensor_noise(image: np.ndarray, std: float, seed: int, step: int) -> np.ndarray:
    """Add N(0, (255·std)²) per pixel and channel; the same (seed, step) gives the same noise."""
    if std == 0:
        return image
    rng = np.random.default_rng([seed, step])
    return image + rng.normal(0.0, 255.0 * std, size=image.shape)


def white_balance_gamma(image: np.ndarray, gains: Vec3, gamma: float) -> np.ndarray:
    """255·(clip(gain·in, 0, 255)/255)^gamma per channel."""
    if tuple(gains) == (1.0, 1.0, 1.0) and gamma == 1.0:
        return image
    balanced = np.clip(image * np.asarray(gains, dtype=np.float64), 0.0, 255.0)
    return 255.0 * (balanced / 255.0) ** gamma


def apply_camera_effects(image: np.ndarray, effects: CameraEffects, seed: int, step: int) -> np.ndarray:
    """The real-proxy's camera on one uint8 H×W×3 frame; `seed`/`step` (episode seed, control step) seed the noise."""
    if effects == CameraEffects():
        return image
    out = radial_distortion(image.astype(np.float64), effects.distortion_k1)
    out = vignette(out, effects.vignette)
    out = gaussian_blur(out, effects.blur_sigma)
    out = sensor_noise(out, effects.noise_std, seed, step)
    out = white_balance_gamma(out, effects.white_balance, effects.gamma)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
