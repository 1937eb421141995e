"""The recorder's pairing of each sent action with the observation it answered (plain logic, no ROS).

One dataset frame per action the franka node actually sent (its `/franka/applied_action`), at the control rate:
    image  the image whose stamp equals the action's stamp (policy: the action answers that frame), otherwise the
           newest image stamped at or before the action (teleop: the operator saw the latest frame)
    state  the newest state stamped at or before the image (the state the policy was given)
Both must lie within `max_skew` of the action's stamp. Actions stamped 0 (watchdog holds: no observation) and
actions with no matching observation are skipped and counted.
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


class _Buffer:
    def __init__(self, maxlen: int) -> None:
        self.stamps: deque[int] = deque(maxlen=maxlen)
        self.values: deque = deque(maxlen=maxlen)

    def add(self, stamp: int, value) -> None:
        if self.stamps and stamp < self.stamps[-1]:
            return  # out of order (a late duplicate): the buffer stays sorted
        self.stamps.append(stamp)
        self.values.append(value)

    def at_or_before(self, stamp: int):
        i = bisect.bisect_right(list(self.stamps), stamp) - 1
        return (self.stamps[i], self.values[i]) if i >= 0 else None


class FrameSync:
    def __init__(self, max_skew_ns: int, history: int = 64) -> None:
        self.max_skew_ns = max_skew_ns
        self._images = _Buffer(history)
        self._states = _Buffer(history * 4)
        self.skipped = 0

    def add_image(self, stamp_ns: int, image: np.ndarray) -> None:
        self._images.add(stamp_ns, image)

    def add_state(self, stamp_ns: int, state: np.ndarray) -> None:
        self._states.add(stamp_ns, state)

    def pair(self, stamp_ns: int, action: np.ndarray) -> SyncedFrame | None:
        if stamp_ns <= 0:
            self.skipped += 1
            return None
        img = self._images.at_or_before(stamp_ns)
        if img is None or stamp_ns - img[0] > self.max_skew_ns:
            self.skipped += 1
            return None
        st = self._states.at_or_before(img[0])
        if st is None or stamp_ns - st[0] > self.max_skew_ns:
            self.skipped += 1
            return None
        return SyncedFrame(image=img[1], state=st[1], action=np.asarray(action, dtype=np.float32))
