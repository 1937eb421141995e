"""The policy node's control loop as plain logic (no ROS): ticks, chunks, the stale-observation watchdog, faults.

Ticks are due every 1/fps. A camera frame that arrives within `tolerance` before a due tick (or any time after it)
runs the tick at once and the next tick falls due one period after that frame (the camera paces the loop, so the
command follows the image it answers by the inference time only); a tick that no frame has taken by
`due + tolerance` is taken by the timer with the latest observation, and the next falls due one period later. Either way the tick
acts only on a fresh observation (image and state younger than `stale`); otherwise it holds (zero motion, gripper
unchanged) and drops the rest of the chunk. Chunks: the policy is queried when the queue is empty and its first
`n_action_steps` actions are executed one per tick (the whole chunk by default, like cotrain.eval).
Freshness is judged by the observations' stamps (capture time), not by when they were received: a frame that sat in a
queue is as old as its stamp says. All times are seconds on the stamps' clock (ROS time: the host's system clock).
A policy that raises, or returns the wrong shape, faults the loop: one hold is emitted and nothing after it until
`start` is called again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from robot_bridge.safety import ACTION_DIM, hold_action

ActFn = Callable[[np.ndarray, np.ndarray, str], np.ndarray]
"""(image uint8 HxWx3, state float32[8], task) -> action chunk [H, 7] in env units."""


@dataclass(frozen=True)
class LoopTiming:
    period: float
    """Seconds between ticks (1 / fps)."""
    tolerance: float
    """Seconds: how early a frame may take a tick, how late the timer takes it."""
    stale: float
    """Seconds: older observations hold the arm."""


@dataclass
class Tick:
    kind: str
    """'act' (policy action), 'hold' (stale observation) or 'fault' (policy failed; a hold, then silence)."""
    action: np.ndarray
    stamp_ns: int
    """Stamp of the image the action answers (0 for holds without an image)."""
    late: bool = False
    """Taken by the timer rather than by a frame."""
    error: str = ""


@dataclass
class LoopStats:
    acts: int = 0
    holds: int = 0
    late: int = 0
    inferences: int = 0
    faults: list[str] = field(default_factory=list)


class PolicyLoop:
    def __init__(self, timing: LoopTiming, n_action_steps: int) -> None:
        if n_action_steps < 0:
            raise ValueError(f"n_action_steps={n_action_steps} must be >= 0 (0 = whole chunk)")
        self.timing = timing
        self.n_action_steps = n_action_steps
        self.state = "idle"  # idle | running | faulted
        self.stats = LoopStats()
        self._queue: deque[np.ndarray] = deque()
        self._next_due = 0.0
        self._image: np.ndarray | None = None
        self._image_t = -np.inf
        self._image_stamp = 0
        self._state: np.ndarray | None = None
        self._state_t = -np.inf
        self._gripper = 1.0  # last gripper command: holds keep it

    # ---- control ------------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.state = "running"
        self._queue.clear()
        self._next_due = now

    def stop(self) -> None:
        self.state = "idle"
        self._queue.clear()

    # ---- inputs -------------------------------------------------------------------------------------
    def on_state(self, state: np.ndarray, stamp: float) -> None:
        """`stamp`: capture time of the state, s."""
        self._state, self._state_t = state, stamp

    def on_frame(self, image: np.ndarray, stamp_ns: int, now: float, act: ActFn, task: str) -> Tick | None:
        """A new camera frame captured at `stamp_ns` (ns), received at `now` (s)."""
        self._image, self._image_t, self._image_stamp = image, stamp_ns * 1e-9, stamp_ns
        if self.state != "running" or now < self._next_due - self.timing.tolerance:
            return None
        return self._tick(now, act, task, late=False)

    def on_timer(self, now: float, act: ActFn, task: str) -> Tick | None:
        if self.state != "running" or now < self._next_due + self.timing.tolerance:
            return None
        return self._tick(now, act, task, late=True)

    # ---- one tick -----------------------------------------------------------------------------------
    def _fresh(self, now: float) -> bool:
        return now - self._image_t <= self.timing.stale and now - self._state_t <= self.timing.stale

    def _advance(self, now: float, late: bool) -> None:
        if not late:  # a frame took the tick: the next is due one period after this frame
            self._next_due = now + self.timing.period
            return
        self._next_due += self.timing.period
        if self._next_due <= now - self.timing.period:  # fell a whole tick behind: re-anchor
            self._next_due = now + self.timing.period

    def _tick(self, now: float, act: ActFn, task: str, late: bool) -> Tick:
        self._advance(now, late)
        if not self._fresh(now):
            self._queue.clear()
            self.stats.holds += 1
            return Tick("hold", hold_action(self._gripper), 0, late=late)
        if not self._queue:
            try:
                chunk = np.asarray(act(self._image, self._state, task), dtype=np.float64)
                if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM or chunk.shape[0] < 1:
                    raise ValueError(f"policy returned actions of shape {chunk.shape}, expected [H, {ACTION_DIM}]")
            except Exception as e:  # noqa: BLE001 - any policy failure stops the loop, never the process
                self.state = "faulted"
                self._queue.clear()
                self.stats.faults.append(f"{type(e).__name__}: {e}")
                return Tick("fault", hold_action(self._gripper), self._image_stamp, late=late, error=self.stats.faults[-1])
            self.stats.inferences += 1
            n = self.n_action_steps or chunk.shape[0]
            self._queue.extend(chunk[:n])
        action = self._queue.popleft()
        if np.isfinite(action[6]):
            self._gripper = float(action[6])
        self.stats.acts += 1
        self.stats.late += int(late)
        return Tick("act", action, self._image_stamp, late=late)
