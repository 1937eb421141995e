"""The recorder's pairing of each sent action with the observation it answered (plain logic, no ROS).

One dataset frame per action the franka node actually sent (its `/franka/applied_action`), at the control rate:
    image  the image whose stamp equals the action's stamp (policy: the action answers that frame), otherwise the
           newest image stamped at or before the action (teleop: the operator saw the latest frame)
    state  the newest state stamped at or before the image (the state the policy was given)
Both must lie within `max_skew` of the action's stamp. Actions stamped 0 (watchdog holds: no observation) and
actions with no matching observation are skipped and counted.

Topics are not ordered with respect to each other: an action can arrive before the image it answers. So an action
waits until its pairing is final, and frames come out in the order the actions were sent:
    decided  an image stamped at or after the action has arrived and a state stamped at or after the chosen image
             (each stream arrives in stamp order, so nothing nearer is still to come: at 50 Hz states that is at most
             20 ms later); or an image or state stamped later than the action + `max_skew` has arrived (the
             observation it waits for is lost or too old to use; actions set no such deadline: a later action says
             nothing about whether this one's image is still in transit); or `flush()` (the episode ends)
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class SyncedFrame:
    image: np.ndarray
    state: np.ndarray
    action: np.ndarray
    operator: bool = False  # the operator drove this action (HG-DAgger takeover), carried through unchanged


@dataclass
class _Action:
    stamp: int
    action: np.ndarray
    operator: bool


class _Buffer:
    def __init__(self, maxlen: int) -> None:
        self.stamps: deque[int] = deque(maxlen=maxlen)
        self.values: deque = deque(maxlen=maxlen)

    def add(self, stamp: int, value) -> None:
        if self.stamps and stamp < self.stamps[-1]:
            return  # out of order (a late duplicate): the buffer stays sorted
        self.stamps.append(stamp)
        self.values.append(value)

    @property
    def newest(self) -> int:
        return self.stamps[-1] if self.stamps else -1

    def at_or_before(self, stamp: int):
        i = bisect.bisect_right(list(self.stamps), stamp) - 1
        return (self.stamps[i], self.values[i]) if i >= 0 else None


class FrameSync:
    def __init__(self, max_skew_ns: int, history: int = 64) -> None:
        self.max_skew_ns = max_skew_ns
        self._images = _Buffer(history)
        self._states = _Buffer(history * 4)
        self._pending: deque[_Action] = deque()
        self.skipped = 0

    @property
    def pending(self) -> int:
        """Actions waiting for their observation."""
        return len(self._pending)

    def add_image(self, stamp_ns: int, image: np.ndarray) -> list[SyncedFrame]:
        self._images.add(stamp_ns, image)
        return self._drain(final=False)

    def add_state(self, stamp_ns: int, state: np.ndarray) -> list[SyncedFrame]:
        self._states.add(stamp_ns, state)
        return self._drain(final=False)

    def add_action(self, stamp_ns: int, action: np.ndarray, operator: bool = False) -> list[SyncedFrame]:
        """Queue a sent action; returns the frames whose pairing is now decided, in the order they were sent."""
        self._pending.append(_Action(stamp_ns, np.asarray(action, dtype=np.float32), operator))
        return self._drain(final=False)

    def flush(self) -> list[SyncedFrame]:
        """Decide every waiting action with what has arrived (the episode ends)."""
        return self._drain(final=True)

    def clear(self) -> None:
        """Drop the waiting actions uncounted (an episode discarded or restarted)."""
        self._pending.clear()

    def _drain(self, final: bool) -> list[SyncedFrame]:
        frames = []
        while self._pending:
            a = self._pending[0]
            if a.stamp > 0 and not final and not self._decided(a.stamp):
                break
            self._pending.popleft()
            frame = self._pair(a)
            if frame is None:
                self.skipped += 1
            else:
                frames.append(frame)
        return frames

    def _decided(self, stamp: int) -> bool:
        if max(self._images.newest, self._states.newest) > stamp + self.max_skew_ns:
            return True
        if self._images.newest < stamp:
            return False  # an image at or before the action may still come
        img = self._images.at_or_before(stamp)
        return img is None or self._states.newest >= img[0]  # a state at or before the image may still come

    def _pair(self, a: _Action) -> SyncedFrame | None:
        if a.stamp <= 0:
            return None
        img = self._images.at_or_before(a.stamp)
        if img is None or a.stamp - img[0] > self.max_skew_ns:
            return None
        st = self._states.at_or_before(img[0])
        if st is None or a.stamp - st[0] > self.max_skew_ns:
            return None
        return SyncedFrame(image=img[1], state=st[1], action=a.action, operator=a.operator)
