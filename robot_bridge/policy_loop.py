"""The policy node's control loop as plain logic (no ROS): ticks, chunks, inference ahead of time, the stale-observation
watchdog, faults.

Ticks are due every 1/fps. A camera frame that arrives within `tolerance` before a due tick (or any time after it)
runs the tick at once and the next tick falls due one period after that frame (the camera paces the loop, so the
command follows the image it answers by the tick's own work only); a tick that no frame has taken by
`due + tolerance` is taken by the timer with the latest observation, and the next falls due one period later. Either
way the tick acts only on a fresh observation (image and state younger than `stale − margin`); otherwise it holds
(zero motion, gripper unchanged), drops the rest of the chunk and forgets any chunk being computed. The timer is also
the watchdog: the moment the latest observation turns `stale − margin` old it sends a hold at once, without waiting
for the next due tick, so the hold is out by the time the observation is `stale` old (margin: the timer's period).
While holding on stale observations the loop's state is 'stale'; the first tick on a fresh one makes it 'running'.
Freshness is judged by the observations' stamps (capture time), not by when they were received: a frame that sat in a
queue is as old as its stamp says. All times are seconds on the stamps' clock (ROS time: the host's system clock).

Chunks: the first `n_action_steps` actions of each chunk (the whole chunk by default, like cotrain.eval) are executed
one per tick. When the next chunk is computed (`prefetch`, in ticks):
    0  (synchronous) the tick that finds the queue empty runs the policy on that tick's observation and acts on the
       result in the same tick (`SyncInference`): exactly cotrain.eval's order; that tick waits for the policy.
    L  (pipelined, 1 <= L <= actions per chunk) the tick that leaves fewer than L actions queued submits the latest
       observation (image, state and the image's stamp) to a worker (`ThreadedInference`) and acts at once; the chunk
       is needed L ticks later, so the policy has L periods to run. With L = actions per chunk this is "start chunk
       k+1 when chunk k starts executing": chunk k+1's first action is sent L ticks after the observation it was
       computed from (`Tick.chunk_stamp_ns` says which). A tick that needs a chunk that is not ready yet sends a
       hold ('wait': zero motion, gripper unchanged; re-sending a delta action would move on an observation nobody
       looked at) and the chunk starts at the first tick after it is ready. No tick ever runs the policy.
A policy that raises, or returns the wrong shape, faults the loop (as soon as the result is seen): one hold is emitted
and nothing after it until `start` is called again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from robot_bridge.inference import ChunkRequest, ChunkResult
from robot_bridge.safety import hold_action

RUNNING = ("running", "stale")


class Inference(Protocol):
    def submit(self, request: ChunkRequest) -> None: ...

    def poll(self) -> ChunkResult | None: ...


@dataclass(frozen=True)
class LoopTiming:
    period: float
    """Seconds between ticks (1 / fps)."""
    tolerance: float
    """Seconds: how early a frame may take a tick, how late the timer takes it."""
    stale: float
    """Seconds: by the time the latest observation is this old, the arm has been sent a hold."""
    margin: float = 0.0
    """Seconds: observations count as stale from `stale − margin` on (the watchdog timer's period)."""


@dataclass
class Tick:
    kind: str
    """'act' (policy action), 'hold' (stale observation), 'wait' (pipelined: the next chunk is not ready; a hold) or
    'fault' (policy failed; a hold, then silence)."""
    action: np.ndarray
    stamp_ns: int
    """Stamp of the latest image at this tick, which the action answers (0 for holds and waits)."""
    late: bool = False
    """Taken by the timer rather than by a frame."""
    error: str = ""
    chunk_stamp_ns: int = 0
    """Stamp of the image the action's chunk was computed from (0 for holds and waits)."""


@dataclass
class LoopStats:
    acts: int = 0
    holds: int = 0
    waits: int = 0
    late: int = 0
    inferences: int = 0
    chunk_age_ms: float = 0.0
    """Age of the last started chunk's observation at its first action (its image stamp to that tick)."""
    faults: list[str] = field(default_factory=list)


class PolicyLoop:
    def __init__(self, timing: LoopTiming, n_action_steps: int, prefetch: int = 0) -> None:
        if n_action_steps < 0:
            raise ValueError(f"n_action_steps={n_action_steps} must be >= 0 (0 = whole chunk)")
        if prefetch < 0 or (n_action_steps and prefetch > n_action_steps):
            raise ValueError(f"prefetch={prefetch} must be in [0, n_action_steps={n_action_steps}] (0 = synchronous)")
        self.timing = timing
        self.n_action_steps = n_action_steps
        self.prefetch = prefetch
        self.state = "idle"  # idle | running | stale (running, holding on stale observations) | faulted
        self.stats = LoopStats()
        self._queue: deque[np.ndarray] = deque()
        self._chunk_stamp = 0  # image stamp of the chunk being executed
        self._inflight: ChunkRequest | None = None  # submitted, result not yet seen
        self._ready: ChunkResult | None = None  # computed, waiting for the queue to empty
        self._seq = 0
        self._next_due = 0.0
        self._image: np.ndarray | None = None
        self._image_t = -np.inf
        self._image_stamp = 0
        self._state: np.ndarray | None = None
        self._state_t = -np.inf
        self._gripper = 1.0  # last gripper command: holds keep it

    # ---- control ------------------------------------------------------------------------------------
    @property
    def image_stamp_ns(self) -> int:
        """Stamp of the latest image (0 if none yet)."""
        return self._image_stamp

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    def start(self, now: float) -> None:
        self.state = "running"
        self._drop()
        self._next_due = now

    def stop(self) -> None:
        self.state = "idle"
        self._drop()

    def _drop(self) -> None:
        """Forget the queued actions, the ready chunk and the one being computed (its result is ignored)."""
        self._queue.clear()
        self._inflight = self._ready = None

    # ---- inputs -------------------------------------------------------------------------------------
    def on_state(self, state: np.ndarray, stamp: float) -> None:
        """`stamp`: capture time of the state, s."""
        self._state, self._state_t = state, stamp

    def on_frame(self, image: np.ndarray, stamp_ns: int, now: float, infer: Inference, task: str) -> Tick | None:
        """A new camera frame captured at `stamp_ns` (ns), received at `now` (s)."""
        self._image, self._image_t, self._image_stamp = image, stamp_ns * 1e-9, stamp_ns
        if not self.running or now < self._next_due - self.timing.tolerance:
            return None
        return self._tick(now, infer, task, late=False)

    def on_timer(self, now: float, infer: Inference, task: str) -> Tick | None:
        if self.state == "running" and not self._fresh(now):  # the watchdog: hold now, not at the next due tick
            return self._stale_hold(late=True)
        if not self.running or now < self._next_due + self.timing.tolerance:
            return None
        return self._tick(now, infer, task, late=True)

    # ---- one tick -----------------------------------------------------------------------------------
    def _fresh(self, now: float) -> bool:
        limit = self.timing.stale - self.timing.margin
        return now - self._image_t < limit and now - self._state_t < limit

    def _stale_hold(self, late: bool) -> Tick:
        self._drop()
        self.stats.holds += 1
        self.state = "stale"
        return self._hold("hold", late)

    def _advance(self, now: float, late: bool) -> None:
        if not late:  # a frame took the tick: the next is due one period after this frame
            self._next_due = now + self.timing.period
            return
        self._next_due += self.timing.period
        if self._next_due <= now - self.timing.period:  # fell a whole tick behind: re-anchor
            self._next_due = now + self.timing.period

    def _request(self, infer: Inference, task: str, now: float) -> None:
        self._seq += 1
        self._inflight = ChunkRequest(self._seq, self._image, self._state, task, self._image_stamp, now)
        infer.submit(self._inflight)

    def _collect(self, infer: Inference) -> str:
        """Take the in-flight request's result if it has arrived; returns its error ('' if none)."""
        result = infer.poll()
        if result is None or self._inflight is None or result.request.seq != self._inflight.seq:
            return ""  # nothing yet, or the result of a request dropped since (stale, stop)
        self._inflight = None
        if result.chunk is None:
            return result.error
        self._ready = result
        self.stats.inferences += 1
        return ""

    def _hold(self, kind: str, late: bool, error: str = "") -> Tick:
        return Tick(kind, hold_action(self._gripper), self._image_stamp if kind == "fault" else 0, late=late, error=error)

    def _tick(self, now: float, infer: Inference, task: str, late: bool) -> Tick:
        self._advance(now, late)
        if not self._fresh(now):
            return self._stale_hold(late)
        self.state = "running"
        error = self._collect(infer)
        if not self._queue and self._ready is None and self._inflight is None and not error:
            self._request(infer, task, now)  # sync: computed here; pipelined: only the first chunk after a (re)start
            error = self._collect(infer)
        if error:
            self.state = "faulted"
            self._drop()
            self.stats.faults.append(error)
            return self._hold("fault", late, error)
        if not self._queue:
            if self._ready is None:
                self.stats.waits += 1
                return self._hold("wait", late)
            chunk, req = self._ready.chunk, self._ready.request
            self._ready = None
            self._queue.extend(chunk[: self.n_action_steps or len(chunk)])
            self._chunk_stamp = req.stamp_ns
            self.stats.chunk_age_ms = (now - req.stamp_ns * 1e-9) * 1000.0
        action = self._queue.popleft()
        if self.prefetch and self._inflight is None and self._ready is None and len(self._queue) < self.prefetch:
            self._request(infer, task, now)  # the next chunk, from this tick's observation, due in `prefetch` ticks
        if np.isfinite(action[6]):
            self._gripper = float(action[6])
        self.stats.acts += 1
        self.stats.late += int(late)
        return Tick("act", action, self._image_stamp, late=late, chunk_stamp_ns=self._chunk_stamp)
