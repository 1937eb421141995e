"""Who drives the arm, the policy or a human operator (HG-DAgger take-over and hand-back), as plain logic (no ROS).

The franka node asks `Takeover` before every command goes to the arm guard (which filters both sources alike):
    policy --any operator command (/teleop/action)--> operator      (at once: that command is the next one sent)
    policy --claim() (an in-process operator deciding to act)--> operator   (its command follows on /teleop/action)
    operator --hand_back()--> policy                                (the policy's next command is sent)
Rules, each keeping a switch from sending something nobody meant:
- while the operator drives, every policy command is dropped;
- after the operator, a policy command is sent only if it answers an observation stamped after the operator's last
  command (a chunk computed before or during the take-over, or a watchdog hold carrying the policy's old gripper,
  never moves the arm the operator left);
- twin backend (`frame_ns` > 0, the env is the clock): a command answering an older frame than the current one is
  dropped (the frame was answered already: each frame gets one command). Commands on two topics reach the arm in no
  set order: the operator's command for frame F can arrive after the policy has answered F and F+1 (a take-over two or
  more frames late). So an operator that decides on the frame itself (the twin's scripted one, under the env's lock)
  claims control as it decides: the policy's command for F may still be sent (it was past `on_policy`), none after.
Thread-safe: the operator's claim comes from another thread than the arm's commands.
Commands are deltas at the guard's reference pose, so a switch never jumps: the next target continues from the one
the other source left (franky backend: the commanded target; twin: the measured pose).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

POLICY, OPERATOR = "policy", "operator"
"""The two sources; also the `header.frame_id` of /franka/applied_action (what the recorder flags)."""


@dataclass
class TakeoverStats:
    takeovers: int = 0
    handbacks: int = 0
    operator_sent: int = 0
    policy_sent: int = 0
    policy_dropped: int = 0
    """Policy commands dropped: while the operator drove, or answering an observation from before its last command."""
    stale_dropped: int = 0
    """Twin: commands answering a frame that was answered already."""

    def to_dict(self) -> dict:
        return asdict(self)


class Takeover:
    def __init__(self) -> None:
        self.controller = POLICY
        self.stats = TakeoverStats()
        self.last_operator_ns = 0
        """Host-clock time of the operator's last command or claim (0: none since `reset`)."""
        self._lock = threading.Lock()

    def reset(self) -> None:
        """A new episode (the arm activated): the policy drives, nothing is remembered."""
        with self._lock:
            self.controller, self.last_operator_ns = POLICY, 0

    def on_policy(self, stamp_ns: int, frame_ns: int = 0) -> bool:
        """Whether a command from /action (stamped with the observation it answers) goes to the arm."""
        with self._lock:
            if self.controller == OPERATOR or (self.last_operator_ns and stamp_ns <= self.last_operator_ns):
                self.stats.policy_dropped += 1
                return False
            if stamp_ns < frame_ns:
                self.stats.stale_dropped += 1
                return False
            self.stats.policy_sent += 1
            return True

    def claim(self, now_ns: int) -> bool:
        """An operator takes control before its command arrives (it has decided to act on the current frame); True if
        the policy had it. Every policy command from now on is dropped until `hand_back`."""
        with self._lock:
            return self._take(now_ns)

    def on_operator(self, stamp_ns: int, now_ns: int, frame_ns: int = 0) -> bool:
        """An operator command takes control at once (if the policy had it); whether this command goes to the arm."""
        with self._lock:
            self._take(now_ns)
            if stamp_ns < frame_ns:
                self.stats.stale_dropped += 1
                return False
            self.stats.operator_sent += 1
            return True

    def hand_back(self) -> bool:
        """Control returns to the policy; False if the policy had it already."""
        with self._lock:
            if self.controller != OPERATOR:
                return False
            self.controller = POLICY
            self.stats.handbacks += 1
            return True

    def _take(self, now_ns: int) -> bool:
        """(Under the lock.) The operator drives from now on; True if this is a take-over."""
        self.last_operator_ns = now_ns
        if self.controller == OPERATOR:
            return False
        self.controller = OPERATOR
        self.stats.takeovers += 1
        return True
