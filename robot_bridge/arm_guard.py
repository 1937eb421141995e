"""The franka node's runtime guards as plain logic (no ROS): the only path from an action to the arm.

States:  inactive --activate--> active --no command for `timeout`, or the arm not following--> holding
         holding --command--> active ; any --estop--> estopped ; a backend error or lost control --> fault
         estopped/fault --reset--> inactive (then `activate` again) ; any --close--> closed
Every command goes through `safety.filter_action` at the backend's reference pose (the pose the delta moves);
nothing reaches the backend while inactive, estopped, faulted or closed. No exception escapes: a failing backend is
stopped (best effort) and the guard faults. Every transition into holding, estopped or fault is one log line.

Locking: the node calls in from several executor threads; every method but `estop` runs under the guard's lock.
`estop` takes no lock: it marks the guard estopped (every locked method sees it at once and sends nothing more) and
calls the backend's thread-safe `halt`, so it answers even while another thread is stuck inside a backend call; the
full `stop` (which waits for the arm to come to rest) follows on the next timer tick or on `reset`. `close` waits for
the lock at most `close_timeout` s, then halts without it.
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
    """Run under the guard's lock."""

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
    tracking_holds: int = 0
    errors: list[str] = field(default_factory=list)


class ArmGuard:
    def __init__(self, backend: ArmBackend, limits: SafetyLimits, command_timeout: float,
                 close_timeout: float = 0.5) -> None:
        self.backend, self.limits, self.command_timeout = backend, limits, command_timeout
        self.close_timeout = close_timeout
        self._state = "inactive"
        self.stats = GuardStats()
        self.last_reasons: tuple[str, ...] = ()
        self.hold_reason = ""
        """Why the arm is holding or stopped ('' while active)."""
        self._last_cmd_t = 0.0
        self._last_gripper = 1.0
        self._lock = threading.RLock()
        self._estopped = threading.Event()
        self._stop_pending = False  # estopped while moving: the full backend stop is still to do

    @property
    def state(self) -> str:
        if self._estopped.is_set() and self._state != "closed":
            return "estopped"
        return self._state

    # ---- lifecycle ----------------------------------------------------------------------------------
    @_locked
    def activate(self, now: float) -> bool:
        if self.state in ("estopped", "fault", "closed"):
            return False
        if not self._safe(self.backend.start):
            return False
        self._state, self._last_cmd_t, self.hold_reason = "active", now, ""
        log.info("arm active")
        return True

    @_locked
    def deactivate(self) -> None:
        if self.state in MOVING:
            self._safe(self.backend.stop)
            if self._state != "fault":
                self._state = "inactive"

    def estop(self) -> None:
        """Lock-free: nothing is sent after this returns, and the backend is halting the arm."""
        if self._state == "closed":
            return
        was = self.state
        self._stop_pending |= was in MOVING
        self._estopped.set()
        try:
            self.backend.halt()
        except Exception as e:  # noqa: BLE001 - the e-stop itself must answer
            self.stats.errors.append(f"halt failed: {type(e).__name__}: {e}")
        if was != "estopped":
            self.hold_reason = "e-stop"
            log.warning("e-stop (was %s): arm halted; commands ignored until reset, then activate", was)

    @_locked
    def close(self) -> None:
        """Stop if moving and disconnect; the guard does nothing afterwards."""
        if self._state == "closed":
            return
        self._state = "closed"
        self.backend.close()

    def close_bounded(self) -> bool:
        """`close`, but if another thread holds the lock for more than `close_timeout` s (stuck in a backend call),
        halt the arm without it and give up on the disconnect; False in that case."""
        if not self._lock.acquire(timeout=self.close_timeout):
            self.estop()
            log.error("closing: a backend call did not return in %.1f s; arm halted, not disconnected", self.close_timeout)
            return False
        try:
            self.close()
        finally:
            self._lock.release()
        return True

    @_locked
    def reset(self) -> bool:
        """estopped/fault -> inactive (the arm moves again only after `activate`)."""
        if self.state not in ("estopped", "fault"):
            return False
        self._finish_stop()
        self._estopped.clear()
        self._state, self.hold_reason = "inactive", ""
        log.info("reset: arm inactive; activate to move again")
        return True

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
        if self._estopped.is_set():  # the e-stop came while this command was on its way: halt again, report nothing
            self.backend.halt()
            return None
        self._last_gripper = float(cmd.action[6])
        self._last_cmd_t = now
        if self._state == "holding" and np.any(cmd.action[0:6]):
            log.info("arm active again (was holding: %s)", self.hold_reason)
            self._state, self.hold_reason = "active", ""
        self.stats.applied += 1
        self.stats.rejected += int(cmd.rejected)
        self.stats.modified += int(bool(cmd.reasons) and not cmd.rejected)
        if cmd.reasons:
            self.last_reasons = cmd.reasons
            log.warning("action %.80r -> sent %s (%s)", action, np.round(cmd.action, 4).tolist(), ", ".join(cmd.reasons))
        return cmd

    @_locked
    def on_timer(self, now: float) -> ArmReading | None:
        """Command timeout, tracking and controller health; returns the reading to publish (None if reading failed)."""
        if self._state == "closed":
            return None
        try:
            if self._estopped.is_set():
                self._finish_stop()
            reading = self.backend.read()
            if self.state in MOVING and not self.backend.in_control:
                raise RuntimeError("arm left control (reflex or error)")
            if self.state in MOVING:
                why = self.backend.tracking_error()
                if why:
                    self.stats.tracking_holds += 1
                    self._hold(why)
                elif self.state == "active" and now - self._last_cmd_t > self.command_timeout:
                    self.stats.timeouts += 1
                    self._hold(f"no command for {self.command_timeout * 1000:.0f} ms")
            return reading
        except Exception as e:  # noqa: BLE001
            self._fault(e)
            return None

    # ---- helpers ------------------------------------------------------------------------------------
    def _hold(self, why: str) -> None:
        self.backend.hold()
        if self._state != "holding" or why != self.hold_reason:
            log.warning("arm holding: %s", why)
        self._state, self.hold_reason = "holding", why

    def _finish_stop(self) -> None:
        """After an e-stop: the backend's full stop (waits for rest), once."""
        if self._stop_pending:
            self._stop_pending = False
            try:
                self.backend.stop()
            except Exception as e:  # noqa: BLE001
                self.stats.errors.append(f"stop after e-stop failed: {type(e).__name__}: {e}")
                log.error("stop after e-stop failed: %s", self.stats.errors[-1])

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
        prev, self._state, self.hold_reason = self.state, "fault", self.stats.errors[-1]
        if prev in MOVING:
            try:
                self.backend.stop()
            except Exception as e2:  # noqa: BLE001
                self.stats.errors.append(f"stop after fault failed: {type(e2).__name__}: {e2}")
