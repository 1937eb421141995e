"""Running the policy for the control loop: inside the tick that needs a chunk (sync) or ahead of it in a worker thread.

Both take a `ChunkRequest` (the observation a chunk is computed from, with the image's stamp) and hand back a
`ChunkResult` (the chunk, or the error) through `poll`, which never blocks:
    SyncInference      `submit` runs the policy at once; the next `poll` returns its result (cotrain.eval's order:
                       the tick that needs a chunk computes it from the observation of that tick).
    ThreadedInference  `submit` hands the request to one worker thread and returns; `poll` returns the result once the
                       worker has finished it (None before). A request submitted while the worker is busy waits for it;
                       a newer one replaces an older one still waiting (only the latest observation is worth computing).
The policy itself is never called from two threads at once. No ROS, no torch: the node passes `act`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from robot_bridge.safety import ACTION_DIM

ActFn = Callable[[np.ndarray, np.ndarray, str], np.ndarray]
"""(image uint8 HxWx3, state float32[8], task) -> action chunk [H, 7] in env units."""


@dataclass(frozen=True)
class ChunkRequest:
    seq: int
    """Request number (increasing within a loop); a result is matched to its request by it."""
    image: np.ndarray
    state: np.ndarray
    task: str
    stamp_ns: int
    """Stamp of the image the chunk is computed from."""
    t: float
    """Loop time at which the chunk was requested, s."""


@dataclass(frozen=True)
class ChunkResult:
    request: ChunkRequest
    chunk: np.ndarray | None
    """float64 [H, 7], or None when the policy failed."""
    error: str = ""


def run_policy(act: ActFn, request: ChunkRequest) -> ChunkResult:
    """One policy call; any exception or a chunk that is not [H >= 1, 7] becomes the result's error."""
    try:
        chunk = np.asarray(act(request.image, request.state, request.task), dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM or chunk.shape[0] < 1:
            raise ValueError(f"policy returned actions of shape {chunk.shape}, expected [H, {ACTION_DIM}]")
    except Exception as e:  # noqa: BLE001 - a policy failure is reported to the loop, never raised into the node
        return ChunkResult(request, None, f"{type(e).__name__}: {e}")
    return ChunkResult(request, chunk)


class SyncInference:
    def __init__(self, act: ActFn) -> None:
        self.act = act
        self._result: ChunkResult | None = None

    def submit(self, request: ChunkRequest) -> None:
        self._result = run_policy(self.act, request)

    def poll(self) -> ChunkResult | None:
        result, self._result = self._result, None
        return result

    def close(self) -> None:
        self._result = None


class ThreadedInference:
    def __init__(self, act: ActFn, name: str = "policy-inference") -> None:
        self.act = act
        self._cv = threading.Condition()
        self._waiting: ChunkRequest | None = None
        self._result: ChunkResult | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: ChunkRequest) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("ThreadedInference.submit after close")
            self._waiting = request
            self._cv.notify()

    def poll(self) -> ChunkResult | None:
        with self._cv:
            result, self._result = self._result, None
            return result

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (after the policy call it is in, if any)."""
        with self._cv:
            self._closed = True
            self._waiting = None
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._cv:
                while self._waiting is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                request, self._waiting = self._waiting, None
            result = run_policy(self.act, request)
            with self._cv:
                self._result = result
