"""Who produced each frame of a dataset (a demonstration, a human correction, the policy) and training weights by it.

LeRobot's convention for human-in-the-loop rollouts (`lerobot-rollout --strategy dagger`, LeRobot 0.6) is a
per-frame feature `intervention` (bool, shape (1,)): True where the human drove the robot, False where the policy did.
The bridge's recorder writes the same feature; cotrain's provenance (`meta/cotrain_provenance.jsonl`) adds the
episode's source. A frame's source is, in this order:
    demo          the episode's provenance says teleop or expert (a whole demonstration)
    intervention  the frame's `intervention` flag is True (or, without the flag, the episode's source is intervention)
    policy        the flag is False (or, without the flag, the episode's source is policy)
    demo          neither flag nor provenance (a dataset recorded elsewhere: demonstrations)
HG-DAgger (Kelly et al. 2019) trains on the human's frames only: the default weights give policy frames 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

INTERVENTION_KEY = "intervention"
INTERVENTION_FEATURE = {"dtype": "bool", "shape": (1,), "names": None}
"""The per-frame feature, exactly as LeRobot 0.6's rollout (dagger strategy) declares it."""
FRAME_SOURCES = ("demo", "intervention", "policy")
DEMO, INTERVENTION, POLICY = range(3)
DEMO_EPISODE_SOURCES = ("teleop", "expert")


def frame_sources(intervention: np.ndarray | None, episode_index: np.ndarray, provenance: dict) -> np.ndarray:
    """int8 [N]: each frame's index into FRAME_SOURCES (rules in the module docstring).

    `intervention`: bool [N] or None (the dataset has no flag); `provenance`: episode index -> Provenance."""
    out = np.full(len(episode_index), DEMO, dtype=np.int8)
    for ep in np.unique(episode_index):
        rows = episode_index == ep
        prov = provenance.get(int(ep))
        source = prov.source if prov is not None else None
        if source in DEMO_EPISODE_SOURCES:
            continue
        if intervention is not None:
            out[rows] = np.where(intervention[rows], INTERVENTION, POLICY)
        elif source == "intervention":
            out[rows] = INTERVENTION
        elif source == "policy":
            out[rows] = POLICY
    return out


@dataclass
class FrameWeights:
    """Training weight of a frame by its source (`cotrain.data.frame_source`). A frame of weight 0 is never drawn
    and its actions are never a target (an action chunk stops where such frames begin); positive weights set how
    often a frame is drawn (probability ∝ weight), so the expected SFT loss is the weight-averaged per-frame loss."""

    demo: float = 1.0
    """Frames of teleoperated or scripted demonstrations."""
    intervention: float = 1.0
    """Frames a human drove while correcting the policy (the recorder's `intervention` flag)."""
    policy: float = 0.0
    """Frames the policy drove during a recorded rollout. 0 (HG-DAgger): learn from the human's frames only."""

    def __post_init__(self) -> None:
        for name in FRAME_SOURCES:
            w = getattr(self, name)
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise ValueError(f"frames.{name}={w!r}: a weight must be a finite number >= 0")
        if not any(getattr(self, name) > 0 for name in FRAME_SOURCES):
            raise ValueError(f"frames: every weight is 0 ({', '.join(FRAME_SOURCES)}): nothing would be trained on")

    def per_source(self) -> np.ndarray:
        """float64 [3]: the weights in FRAME_SOURCES order."""
        return np.array([getattr(self, name) for name in FRAME_SOURCES], dtype=np.float64)

    def of(self, sources: np.ndarray) -> np.ndarray:
        """float64 [N]: the weight of each frame, from `frame_sources`."""
        return self.per_source()[sources]


def run_ends(weights: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
    """int64 [N]: one past the last frame of the run of positive-weight frames that frame i starts, within its
    episode (for a frame of weight 0: i + 1). An action chunk from frame i holds actions i … run_end − 1 and is
    padding after (as after an episode's end), so a chunk never takes a zero-weight frame's action as a target."""
    n = len(weights)
    out = np.empty(n, dtype=np.int64)
    nxt = n
    for i in range(n - 1, -1, -1):
        continues = weights[i] > 0 and i + 1 < episode_end[i] and weights[i + 1] > 0
        out[i] = nxt if continues else i + 1
        nxt = out[i]
    return out


def source_counts(sources: np.ndarray) -> dict[str, int]:
    return {name: int((sources == k).sum()) for k, name in enumerate(FRAME_SOURCES)}
