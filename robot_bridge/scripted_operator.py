"""A scripted operator for the twin (a simulation playing the human of HG-DAgger): the task's expert watches every frame
and takes over only when the policy drifts off course, then hands back. Plain logic (no ROS); the node that puts it on
/teleop/action is robot_bridge/nodes/operator_node.py.

Off course (the stated criterion): the TCP has not come `progress_m` closer to the expert's current waypoint for
`patience` consecutive frames (the policy stalls, wanders or heads elsewhere). While the policy drives, the operator
only follows the plan: a waypoint the TCP reaches (within its tolerance) is done. Once it has taken over, the expert
drives (`WaypointExpert.act`, the demonstrations' follower) until it has finished the waypoint it took over at and
driven at least `min_steps` steps; then it hands back. The operator sees the simulated scene (it plays a person looking
at the robot); what the policy learns from is only the recorded frames and the operator's commands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WATCH, ACT, HAND_BACK = "watch", "act", "hand_back"


@dataclass(frozen=True)
class DriftCriterion:
    patience: int = 8
    """Frames without progress towards the expert's current waypoint before the operator takes over."""
    progress_m: float = 0.01
    """How much closer (m) the TCP must come to the waypoint to count as progress."""
    min_steps: int = 5
    """Steps the operator drives at least once it has taken over."""

    def __post_init__(self) -> None:
        if self.patience < 1 or self.min_steps < 1 or not self.progress_m > 0:
            raise ValueError(f"operator: patience={self.patience} and min_steps={self.min_steps} must be >= 1, "
                             f"progress_m={self.progress_m} > 0")


@dataclass(frozen=True)
class Decision:
    kind: str
    """watch (the policy answers this frame), act (the operator's `action` answers it), hand_back (the policy will)."""
    action: np.ndarray | None = None


class DriftOperator:
    """Per frame, `decide(env)`: watch, act or hand back (one env, num_envs = 1)."""

    def __init__(self, expert, criterion: DriftCriterion) -> None:
        self.expert, self.criterion = expert, criterion
        self.driving = False
        self.takeovers = 0

    def reset(self, env, seed: int) -> None:
        self.expert.reset(env, seed)
        self.driving, self.steps, self.taken_at = False, 0, 0
        self._watch_from_here()

    def _watch_from_here(self) -> None:
        self.best, self.stalled = math.inf, 0

    def decide(self, env) -> Decision:
        e = self.expert
        if self.driving:
            if e.index > self.taken_at and self.steps >= self.criterion.min_steps:
                self.driving = False
                self._watch_from_here()
                return Decision(HAND_BACK)
            self.steps += 1
            return Decision(ACT, e.act(env))
        if e.index >= len(e.waypoints):
            return Decision(WATCH)  # the plan is done: nothing left to correct
        wp = e.waypoints[e.index]
        d = float(np.linalg.norm(wp.target(env) - tcp_position(env)))
        if d <= wp.tol:  # the policy reached this waypoint: follow the plan
            e.index, e.steps, e.settled = e.index + 1, 0, 0
            self._watch_from_here()
            return Decision(WATCH)
        if d < self.best - self.criterion.progress_m:
            self.best, self.stalled = d, 0
        else:
            self.stalled += 1
        if self.stalled < self.criterion.patience:
            return Decision(WATCH)
        self.driving, self.steps, self.taken_at = True, 1, e.index
        e.steps, e.settled = 0, 0
        self.takeovers += 1
        return Decision(ACT, e.act(env))


def tcp_position(env) -> np.ndarray:
    return env.agent.tcp.pose.p[0].detach().cpu().numpy().astype(np.float64)
