"""The interface the franka node drives; one implementation per kind of arm (franky, twin).

The node guarantees the call order `connect` -> (`start` -> (`apply` | `hold`)* -> `stop`)* -> `close`, calls
`apply` only with actions that passed `safety.filter_action`, and never calls anything but `read` before `start`;
the one exception is `halt` (the e-stop), which may come at any time from any thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmReading:
    xyz: np.ndarray
    """End-effector position, m, robot base frame."""
    quat: np.ndarray
    """End-effector orientation, quaternion [x, y, z, w]."""
    q: np.ndarray
    """7 arm joint positions, rad."""
    fingers: np.ndarray
    """2 finger positions, m (their sum is the gripper width)."""


class ArmBackend(ABC):
    @abstractmethod
    def connect(self) -> None:
        """Open the connection; moves nothing."""

    @abstractmethod
    def read(self) -> ArmReading:
        """Current measured state (cheap: called at the state rate)."""

    @abstractmethod
    def reference_xyz(self) -> np.ndarray:
        """Position the next delta action is applied to (measured, or the commanded target a tracker follows)."""

    @abstractmethod
    def start(self) -> None:
        """Take control and hold the current pose."""

    @abstractmethod
    def apply(self, action: np.ndarray) -> None:
        """Move by a safety-filtered action (Δxyz, Δrpy, gripper) from the reference pose."""

    @abstractmethod
    def hold(self) -> None:
        """Stay at the current pose (controller stays active)."""

    @abstractmethod
    def stop(self) -> None:
        """Bring the arm to rest and release control; `start` is needed to move again."""

    @abstractmethod
    def close(self) -> None:
        """Stop if needed and disconnect."""

    def halt(self) -> None:
        """E-stop: start bringing the arm to rest at once and return without waiting. Called without the guard's lock,
        possibly while another thread is inside a backend call, so it must be thread-safe. The default does nothing:
        an arm that moves only inside `apply` (the twin) stops when commands stop."""

    def status(self) -> dict:
        """Backend-specific fields for the franka node's status (JSON-serialisable; read without the guard's lock)."""
        return {}

    def tracking_error(self) -> str:
        """Why the arm should hold because it does not follow its target ('' if it does; '' for backends without a
        tracking target)."""
        return ""

    @property
    @abstractmethod
    def in_control(self) -> bool:
        """True between a successful `start` and `stop` while the controller runs without error."""
