"""Domain randomisation around calibrated values: strict ranges, one domain sample per episode seed.

The ranges live in a task config's `randomization` (`TaskConfig.randomization`; all zero: none), which
`python -m cotrain.calibrate` writes next to the calibrated `twin` domain.

Every range is a half-width around the value of the domain it perturbs (the calibrated `twin`, never the
real-proxy): additive for colours, camera offsets and latency, relative for light, friction and mass. A zero
half-width returns the calibrated value exactly; the same (domain, ranges, seed) gives the same sample.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

from cotrain.errors import ConfigError


@dataclass(frozen=True)
class RandomizationRanges:
    """Half-widths of the per-episode randomisation around a calibrated domain."""

    light_scale: float = 0.0
    """Relative: ambient and directional light colours × U(1 − w, 1 + w) (one factor for both)."""
    color: float = 0.0
    """Additive, per RGB channel of the table and every palette colour (clipped to [0, 1])."""
    camera_eye: float = 0.0
    """Additive (m), per axis of the camera eye offset."""
    camera_target: float = 0.0
    """Additive (m), per axis of the camera target offset."""
    friction: float = 0.0
    """Relative: friction × U(1 − w, 1 + w)."""
    mass_scale: float = 0.0
    """Relative: mass scale × U(1 − w, 1 + w)."""
    latency_steps: int = 0
    """Additive: latency + an integer in [−w, w], at least 0."""
    distribution: Literal["uniform", "triangular"] = "uniform"
    """How a value is drawn within its range: flat, or peaked at the calibrated value."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "distribution" and value < 0:
                raise ConfigError(f"randomization.{f.name} must be >= 0, got {value}")
        for name in ("light_scale", "friction", "mass_scale"):
            if getattr(self, name) >= 1:
                raise ConfigError(f"randomization.{name} is relative and must be < 1, got {getattr(self, name)}")
        if self.distribution not in ("uniform", "triangular"):
            raise ConfigError(f"randomization.distribution must be 'uniform' or 'triangular', got "
                              f"{self.distribution!r}")

    @property
    def is_zero(self) -> bool:
        """Every half-width is zero: `sample_domain` returns the domain itself, whatever the seed."""
        return all(getattr(self, f.name) == 0 for f in dataclasses.fields(self) if f.name != "distribution")


def _draw(rng: np.random.Generator, center: np.ndarray, half: float, distribution: str) -> np.ndarray:
    """center + a draw in [−half, half] per entry (center itself when half is 0)."""
    center = np.asarray(center, dtype=np.float64)
    if half == 0:
        return center
    if distribution == "triangular":
        return center + rng.triangular(-half, 0.0, half, size=center.shape)
    return center + rng.uniform(-half, half, size=center.shape)


Domain = TypeVar("Domain")
"""A `cotrain.envs.config.DomainConfig` (named, not imported: the env config imports this module)."""


def sample_domain(domain: Domain, ranges: RandomizationRanges, seed: int) -> Domain:
    """One randomised copy of `domain` for the episode `seed` (draws in a fixed order, so a range of zero width
    never shifts the others' draws)."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    d = ranges.distribution
    light = float(_draw(rng, np.ones(1), ranges.light_scale, d)[0])
    table = np.clip(_draw(rng, domain.table_rgba[:3], ranges.color, d), 0.0, 1.0)
    palette = {name: (*(float(c) for c in np.clip(_draw(rng, rgba[:3], ranges.color, d), 0.0, 1.0)), rgba[3])
               for name, rgba in sorted(domain.palette.items())}
    eye = _draw(rng, domain.camera_eye_offset, ranges.camera_eye, d)
    target = _draw(rng, domain.camera_target_offset, ranges.camera_target, d)
    friction = float(_draw(rng, np.ones(1), ranges.friction, d)[0]) * domain.friction
    mass = float(_draw(rng, np.ones(1), ranges.mass_scale, d)[0]) * domain.mass_scale
    shift = int(rng.integers(-ranges.latency_steps, ranges.latency_steps + 1)) if ranges.latency_steps else 0

    def vec(v):
        return tuple(float(x) for x in v)

    return dataclasses.replace(
        domain, ambient_light=vec(np.multiply(domain.ambient_light, light)),
        light_color=vec(np.multiply(domain.light_color, light)),
        table_rgba=(*vec(table), domain.table_rgba[3]), palette={k: palette[k] for k in domain.palette},
        camera_eye_offset=vec(eye), camera_target_offset=vec(target), friction=friction, mass_scale=mass,
        action_latency_steps=max(0, domain.action_latency_steps + shift))
