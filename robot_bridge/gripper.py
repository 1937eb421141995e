"""Gripper commands off the arm's control path: one worker thread sends them, the control loop only posts.

A gripper call can block for the length of a move (franky: a grasp sent during an open returns when the open ends,
and on franky-sim one was seen never to return); the arm's control path, which holds the guard's lock, must never
wait for it. `post` only records the wanted state (latest wins: a command superseded while the worker is busy is
never sent) and returns at once; the worker sends each new wanted state in order. The worker is a daemon thread: a
call that never returns keeps only the worker, never the process, alive.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class GripperWorker:
    def __init__(self, send: Callable[[bool], None], name: str = "gripper") -> None:
        """`send(closed)`: grasp (True) or open (False); may block."""
        self._send = send
        self._cond = threading.Condition()
        self._wanted: bool | None = None
        self._sent: bool | None = None
        self._busy_since: float | None = None
        self._closing = False
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def post(self, closed: bool) -> None:
        """Want the gripper closed (grasp) or open; never blocks beyond a short lock."""
        with self._cond:
            if closed != self._wanted:
                self._wanted = closed
                self._cond.notify()

    @property
    def busy_s(self) -> float:
        """How long the call in progress has been running (0 if idle)."""
        t = self._busy_since
        return 0.0 if t is None else time.monotonic() - t

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closing or self._wanted != self._sent)
                if self._closing:
                    return
                closed = self._sent = self._wanted
                self._busy_since = time.monotonic()
            try:
                self._send(closed)
            except Exception as e:  # noqa: BLE001 - a failed gripper command must not end the worker
                self.errors.append(f"{type(e).__name__}: {e}")
                log.error("gripper %s failed: %s", "grasp" if closed else "open", self.errors[-1])
            finally:
                self._busy_since = None

    def close(self, timeout: float = 0.2) -> bool:
        """Stop taking commands; True if the worker ended within `timeout` s (else it is left blocked, a daemon)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()
