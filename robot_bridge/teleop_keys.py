"""Keyboard teleoperation as plain logic: keys -> end-effector velocity, gripper, recorder commands.

    w/s  +x/-x     a/d  +y/-y     r/f  +z/-z          (base frame)
    u/o  ±roll     i/k  ±pitch    j/l  ±yaw
    space  toggle gripper (c close, v open)           1 start recording, 2 save episode, 3 discard
    h      hand control back to the policy (intervene mode: any motion or gripper key takes it over)
A motion key drives its axis at full speed for `key_hold_s` after the last press (terminal key repeat keeps
it going while held). The action sent at the control rate is velocity / fps (m and rad per step).
"""

from __future__ import annotations

import numpy as np

MOTION_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "u": (3, 1.0), "o": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "j": (5, 1.0), "l": (5, -1.0),
}
RECORDER_KEYS = {"1": "/recorder/start", "2": "/recorder/stop", "3": "/recorder/discard"}
SERVICE_KEYS = RECORDER_KEYS | {"h": "/franka/hand_back"}
GRIPPER_KEYS = (" ", "c", "v")


class KeyTeleop:
    def __init__(self, linear_speed: float, angular_speed: float, key_hold_s: float = 0.15) -> None:
        self.speed = np.array([linear_speed] * 3 + [angular_speed] * 3)
        self.key_hold_s = key_hold_s
        self.gripper = 1.0  # open
        self._until = np.full(6, -np.inf)
        self._sign = np.zeros(6)
        self._gripper_pressed = False

    def on_key(self, key: str, now: float) -> str | None:
        """Update from one key; returns a recorder service to call, if the key asks for one."""
        if key in MOTION_KEYS:
            axis, sign = MOTION_KEYS[key]
            self._sign[axis], self._until[axis] = sign, now + self.key_hold_s
        elif key == " ":
            self.gripper = -self.gripper
        elif key == "c":
            self.gripper = -1.0
        elif key == "v":
            self.gripper = 1.0
        self._gripper_pressed |= key in GRIPPER_KEYS
        return SERVICE_KEYS.get(key)

    def has_input(self, now: float) -> bool:
        """Whether the operator is giving input this tick: a motion key held, or a gripper key pressed since the
        last call (what takes control from the policy in intervene mode)."""
        pressed, self._gripper_pressed = self._gripper_pressed, False
        return pressed or bool(np.any(now < self._until))

    def follow_gripper(self, command: float) -> None:
        """While the policy drives: the gripper the arm was last sent, so that a take-over starts from it."""
        self.gripper = 1.0 if command >= 0 else -1.0

    def velocity(self, now: float) -> np.ndarray:
        """[vx, vy, vz, wx, wy, wz] in m/s and rad/s."""
        return np.where(now < self._until, self._sign, 0.0) * self.speed

    def action(self, now: float, fps: float) -> np.ndarray:
        """The 7-d action for one control step: velocity · (1 / fps), gripper."""
        return np.concatenate([self.velocity(now) / fps, [self.gripper]])
