"""The feature spec: the shapes that sim, real, training and the bridge agree on.

One third-person RGB camera, an 8-d proprio state (end-effector xyz in the robot base frame, rpy, and the two
finger positions in m, whose sum is the gripper width), a 7-d action
(Δxyz in m, Δrpy in rad, gripper −1 close … +1 open) at a fixed control rate, and a task string.
Datasets, checkpoints and the robot config each carry a spec; `check_matches` refuses a mismatch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

IMAGE_KEY = "observation.images.main"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
TASK_KEY = "task"

STATE_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "finger_left", "finger_right")
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


@dataclass(frozen=True)
class FeatureSpec:
    image_height: int = 128
    """Camera image height in pixels."""
    image_width: int = 128
    """Camera image width in pixels."""
    state_dim: int = 8
    """Proprio state: ee xyz (3), ee rpy (3), left and right finger positions (2); see STATE_NAMES."""
    action_dim: int = 7
    """Δxyz, Δrpy, gripper command."""
    fps: int = 10
    """Control rate in Hz; also the dataset's frame rate."""

    def __post_init__(self) -> None:
        for name in ("image_height", "image_width", "state_dim", "action_dim", "fps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FeatureSpec.{name} must be positive, got {getattr(self, name)}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_height, self.image_width, 3)

    def lerobot_features(self, use_video: bool = True) -> dict:
        """Features dict in LeRobot's format (without the default index/timestamp features)."""
        return {
            IMAGE_KEY: {
                "dtype": "video" if use_video else "image",
                "shape": self.image_shape,
                "names": ["height", "width", "channels"],
            },
            STATE_KEY: {"dtype": "float32", "shape": (self.state_dim,), "names": list(STATE_NAMES) if self.state_dim == len(STATE_NAMES) else None},
            ACTION_KEY: {"dtype": "float32", "shape": (self.action_dim,), "names": list(ACTION_NAMES) if self.action_dim == len(ACTION_NAMES) else None},
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown feature-spec keys {sorted(unknown)}")
        return cls(**d)

    def check_matches(self, other: "FeatureSpec", where: str) -> None:
        """Raise one clear error naming `where` and every field that differs."""
        diffs = [
            f"{k}: expected {v}, got {getattr(other, k)}"
            for k, v in self.to_dict().items()
            if getattr(other, k) != v
        ]
        if diffs:
            raise SpecMismatchError(f"{where}: feature spec does not match ({'; '.join(diffs)})")


class SpecMismatchError(ValueError):
    """A dataset, checkpoint or robot config whose features differ from the expected spec."""
