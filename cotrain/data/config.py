"""Which datasets a run trains on and how they are mixed."""

from __future__ import annotations

from dataclasses import dataclass, field

from cotrain.data.frame_source import FrameWeights


@dataclass
class DataConfig:
    real: list[str] = field(default_factory=list)
    """Roots of real datasets (robot recordings, or the real-proxy stand-in); several are concatenated."""
    sim: list[str] = field(default_factory=list)
    """Roots of simulated datasets (scripted-expert demos in the twin)."""
    alpha: float = 0.5
    """Real fraction of every batch (exact per batch when alpha·batch_size is an integer)."""
    batch_size: int = 128
    """Samples per SFT batch (128: the measured Stage I recipe, docs/results.md)."""
    seed: int = 0
    """Seed of the batch order; batches are a pure function of (seed, step)."""
    frames: FrameWeights = field(default_factory=FrameWeights)
    """Weight of each frame of data.real / data.sim by its source (demo, intervention, policy;
    `cotrain.data.frame_source`): 0 leaves those frames out; the default trains on the human's frames (HG-DAgger)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"data.alpha={self.alpha} must be in [0, 1]")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size={self.batch_size} must be >= 1")
