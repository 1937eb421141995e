"""The franka node's runtime guards as plain logic (no ROS): the only path from an action to the arm.

States:  inactive --activate--> active --no command for `timeout`--> holding --command--> active
         any --estop--> estopped ; a backend error or lost control --> fault ; estopped/fault --reset--> inactive
         any --close--> closed
Every command goes through `safety.filter_action` at the backend's reference pose (the pose the delta moves);
nothing reaches the backend while inactive, estopped, faulted or closed. No exception escapes: a failing backend is stopped (best effort) and the guard faults.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from robot_bridge.backends.base import ArmBackend, ArmReading
from robot_bridge.safety import SafeCommand, SafetyLimits, filter_action

log = logging.getLogger(__name__)
MOVING = ("active", "holding")


def _locked(method):
    """Run under the guard's lock: the node calls in from several executor threads."""

    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


@dataclass
class GuardStats:
    applied: int = 0
    rejected: int = 0
    modified: int = 0
    ignored: int = 0
    timeouts: int = 0
    errors: list[str] = field(default_factory=list)


class ArmGuard:
    def __init__(self, backend: ArmBackend, limits: SafetyLimits, command_timeout: float) -> None:
        self.backend, self.limits, self.command_timeout = backend, limits, command_timeout
        self.state = "inactive"
        self.stats = GuardStats()
        self.last_reasons: tuple[str, ...] = ()
        self._last_cmd_t = 0.0
        self._last_gripper = 1.0
        self._lock = threading.RLock()

    # ---- lifecycle ----------------------------------------------------------------------------------
    @_locked
    def activate(self, now: float) -> bool:
        if self.state in ("estopped", "fault"):
            return False
        if not self._safe(self.backend.start):
            return False
        self.state, self._last_cmd_t = "active", now
        return True

    @_locked
    def deactivate(self) -> None:
        if self.state in MOVING:
            self._safe(self.backend.stop)
            if self.state != "fault":
                self.state = "inactive"

    @_locked
    def estop(self) -> None:
        if self.state in MOVING:
            self._safe(self.backend.stop)
        self.state = "estopped"

    @_locked
    def close(self) -> None:
        """Stop if moving and disconnect; the guard does nothing afterwards."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.backend.close()

    @_locked
    def reset(self) -> bool:
        if self.state in ("estopped", "fault"):
            self.state = "inactive"
            return True
        return False

    # ---- inputs -------------------------------------------------------------------------------------
    @_locked
    def on_action(self, action, now: float) -> SafeCommand | None:
        """Filter and send; None when the arm is not accepting commands."""
        if self.state not in MOVING:
            self.stats.ignored += self.state != "closed"
            return None
        try:
            cmd = filter_action(action, self.backend.reference_xyz(), self._last_gripper, self.limits)
            self.backend.apply(cmd.action)
        except Exception as e:  # noqa: BLE001 - never let a backend error escape the arm loop
            self._fault(e)
            return None
        self._last_gripper = float(cmd.action[6])
        self._last_cmd_t = now
        self.state = "active"
        self.stats.applied += 1
        self.stats.rejected += int(cmd.rejected)
        self.stats.modified += int(bool(cmd.reasons) and not cmd.rejected)
        if cmd.reasons:
            self.last_reasons = cmd.reasons
            log.warning("action %.80r -> sent %s (%s)", action, np.round(cmd.action, 4).tolist(), ", ".join(cmd.reasons))
        return cmd

    @_locked
    def on_timer(self, now: float) -> ArmReading | None:
        """Command timeout and controller health; returns the reading to publish (None if reading failed)."""
        if self.state == "closed":
            return None
        try:
            reading = self.backend.read()
            if self.state in MOVING and not self.backend.in_control:
                raise RuntimeError("arm left control (reflex or error)")
            if self.state == "active" and now - self._last_cmd_t > self.command_timeout:
                self.backend.hold()
                self.state = "holding"
                self.stats.timeouts += 1
            return reading
        except Exception as e:  # noqa: BLE001
            self._fault(e)
            return None

    # ---- helpers ------------------------------------------------------------------------------------
    def _safe(self, fn) -> bool:
        try:
            fn()
            return True
        except Exception as e:  # noqa: BLE001
            self._fault(e)
            return False

    def _fault(self, e: Exception) -> None:
        self.stats.errors.append(f"{type(e).__name__}: {e}")
        log.error("arm fault: %s", self.stats.errors[-1])
        prev, self.state = self.state, "fault"
        if prev in MOVING:
            try:
                self.backend.stop()
            except Exception as e2:  # noqa: BLE001
                self.stats.errors.append(f"stop after fault failed: {type(e2).__name__}: {e2}")
