"""Scripted experts: waypoints in end-effector space, followed closed-loop, plus `run_expert_episode` for demos.

Each task has a `plan_*` function that turns the privileged scene state into waypoints (TCP position, TCP yaw with
the gripper pointing down, gripper command). The follower steers the TCP with a proportional Δ-pose command and
advances when a waypoint is reached (or times out, e.g. when pushing against a stop). With `noise_std` > 0 it adds
smooth (Ornstein-Uhlenbeck) noise to the Δxyz command, so real-proxy demos look like human teleop.

Latency: in a domain whose commands execute `action_latency_steps` (L) steps late, the follower steers from where
the TCP will be once its L pending commands have run (a Smith predictor: measured pose + the pending Δ-poses), as
an operator used to the arm's lag does. Without it the proportional gain of 1 oscillates: with one step of delay,
x_{t+1} = x_t + (g − x_{t−1}) has its poles on the unit circle (z² − z + 1 = 0), and demos in a one-step-latency
pick_place took 38 % more steps with 2.5× the z-direction reversals (10 episodes each).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.spatial.transform import Rotation

from cotrain.data.spec import IMAGE_KEY, STATE_KEY
from cotrain.envs.base import TwinTaskEnv
from cotrain.envs.config import DomainConfig
from cotrain.envs.drawer import HANDLE_HALF, TRAVEL, DrawerEnv
from cotrain.envs.pick_place import TRAY_WALL, PickPlaceEnv
from cotrain.envs.push_cube import GOAL_X, PushCubeEnv

POS_GAIN = 1.0
ROT_GAIN = 1.0
MAX_SPEED = 0.04
"""Largest commanded |Δx|, |Δy|, |Δz| per control step (m)."""
MAX_ROT_SPEED = 0.25
"""Largest commanded rotation per control step (rad)."""
ROT_TOL = 0.06
NOISE_CORRELATION = 0.7
"""OU noise: n_t = c·n_{t−1} + sqrt(1 − c²)·σ·ε."""
OPEN, CLOSED = 1.0, -1.0
HALF_OPEN = 0.28
"""Finger targets −0.01 + (g + 1)/2 · 0.05 ≈ 0.022 m: around the drawer handle, clear of the front panel."""
DOWN = Rotation.from_euler("x", math.pi)
"""TCP orientation pointing down with yaw 0 (R = Rx(π))."""

Target = Callable[[TwinTaskEnv], np.ndarray]


@dataclass(frozen=True)
class Waypoint:
    target: Target
    """World xyz of the TCP, re-evaluated every step (closed loop on moving objects)."""
    yaw: float
    gripper: float
    tol: float = 0.01
    settle: int = 0
    """Extra steps to stay once reached (lets the gripper close or open)."""
    timeout: int = 30
    speed: float = MAX_SPEED


def fixed(p: np.ndarray) -> Target:
    return lambda env: p


def above_object(height: float) -> Target:
    """Track the pick-and-place object's xy at a fixed TCP height."""
    return lambda env: _np(env.obj.pose.p) * [1, 1, 0] + [0, 0, height]


def push_through(x: float, z: float) -> Target:
    """Push to a fixed x at height z, tracking the named cube's y (it may drift sideways)."""
    return lambda env: np.array([x, _np(env.target_pos())[1], z])


def _np(t) -> np.ndarray:
    return t[0].detach().cpu().numpy().astype(np.float64)


def _yaw_of_matrix(m: np.ndarray) -> float:
    return math.atan2(m[1, 0], m[0, 0])


def _closest_yaw(yaw: float, period: float, current: float) -> float:
    """The angle equivalent to `yaw` modulo `period` that is closest to `current`."""
    return yaw + period * round((current - yaw) / period)


def tcp_yaw(env: TwinTaskEnv) -> float:
    return (Rotation.from_quat(_np(env.agent.tcp.pose.q), scalar_first=True) * DOWN.inv()).as_euler("ZYX")[0]


# ----------------------------------------------------------------------------- plans
def plan_pick_place(env: PickPlaceEnv) -> list[Waypoint]:
    shape = env.shape[0]
    pose = env.obj.pose
    obj_yaw = _yaw_of_matrix(Rotation.from_quat(_np(pose.q), scalar_first=True).as_matrix())
    now = tcp_yaw(env)
    yaw = now if shape.symmetry >= 2 * math.pi else _closest_yaw(obj_yaw + shape.grasp_yaw, shape.symmetry, now)
    grasp_z = min(max(shape.half_height, 0.015), 0.03)
    tray = _np(env.tray.pose.p)
    release_z = TRAY_WALL + 2 * shape.half_height + 0.03
    return [
        Waypoint(above_object(0.10), yaw, OPEN, tol=0.02),
        Waypoint(above_object(grasp_z), yaw, OPEN, tol=0.006),
        Waypoint(above_object(grasp_z), yaw, CLOSED, tol=0.02, settle=3),
        Waypoint(fixed(_np(pose.p) * [1, 1, 0] + [0, 0, 0.14]), yaw, CLOSED, tol=0.03),
        Waypoint(fixed(tray + [0, 0, 0.14]), yaw, CLOSED, tol=0.02),
        Waypoint(fixed(tray + [0, 0, max(release_z, env.tray_height + 0.02)]), yaw, CLOSED, tol=0.01),
        Waypoint(fixed(tray + [0, 0, max(release_z, env.tray_height + 0.02)]), yaw, OPEN, tol=0.02, settle=2),
        Waypoint(fixed(tray + [0, 0, 0.18]), yaw, OPEN, tol=0.02),
    ]


def plan_push_cube(env: PushCubeEnv) -> list[Waypoint]:
    half = env.cube_half
    yaw, z = tcp_yaw(env), half + 0.005
    start = _np(env.target_pos()) + [-(half + 0.045), 0, 0]
    return [
        Waypoint(fixed(start * [1, 1, 0] + [0, 0, 0.08]), yaw, CLOSED, tol=0.015),
        Waypoint(fixed(start * [1, 1, 0] + [0, 0, z]), yaw, CLOSED, tol=0.008),
        Waypoint(push_through(GOAL_X - half - 0.012, z), yaw, CLOSED, tol=0.004, timeout=60, speed=0.025),
        Waypoint(fixed(np.array([GOAL_X - 0.12, start[1], 0.1])), yaw, CLOSED, tol=0.02),
    ]


def plan_open_drawer(env: DrawerEnv) -> list[Waypoint]:
    yaw = _closest_yaw(float(env.cabinet_yaw()[0]) + math.pi / 2, math.pi, tcp_yaw(env))
    handle, pull = _np(env.handle_pos()), _np(env.pull_direction())
    closed_handle = handle - pull * float(env.open_fraction()[0]) * TRAVEL
    out = closed_handle + pull * TRAVEL * 0.9
    return [
        Waypoint(fixed(handle + [0, 0, 0.08]), yaw, HALF_OPEN, tol=0.015),
        Waypoint(fixed(handle + [0, 0, 0.002]), yaw, HALF_OPEN, tol=0.006),
        Waypoint(fixed(handle + [0, 0, 0.002]), yaw, CLOSED, tol=0.02, settle=3),
        Waypoint(fixed(out + [0, 0, 0.002]), yaw, CLOSED, tol=0.01, timeout=50, speed=0.03),
    ]


def plan_close_drawer(env: DrawerEnv) -> list[Waypoint]:
    yaw = _closest_yaw(float(env.cabinet_yaw()[0]), math.pi, tcp_yaw(env))
    handle, pull = _np(env.handle_pos()), _np(env.pull_direction())
    closed_handle = handle - pull * float(env.open_fraction()[0]) * TRAVEL
    front = handle + pull * (HANDLE_HALF[0] + 0.04)
    return [
        Waypoint(fixed(front + [0, 0, 0.08]), yaw, CLOSED, tol=0.015),
        Waypoint(fixed(front), yaw, CLOSED, tol=0.008),
        Waypoint(fixed(closed_handle + pull * HANDLE_HALF[0]), yaw, CLOSED, tol=0.005, timeout=50, speed=0.03),
        Waypoint(fixed(front + [0, 0, 0.1]), yaw, CLOSED, tol=0.02),
    ]


PLANS: dict[str, Callable[[Any], list[Waypoint]]] = {
    "pick_place": plan_pick_place,
    "push_cube": plan_push_cube,
    "open_drawer": plan_open_drawer,
    "close_drawer": plan_close_drawer,
}


# ----------------------------------------------------------------------------- follower
class WaypointExpert:
    """Follows a task's waypoints with a proportional Δ-pose command (one env, num_envs = 1)."""

    def __init__(self, plan: Callable[[Any], list[Waypoint]], noise_std: float = 0.0):
        self.plan, self.noise_std = plan, noise_std

    def reset(self, env: TwinTaskEnv, seed: int) -> None:
        self.waypoints = self.plan(env)
        self.index, self.steps, self.settled = 0, 0, 0
        self.rng = np.random.default_rng(seed)
        self.noise = np.zeros(3)
        self.pending: deque[np.ndarray] = deque(maxlen=env.episode_domains[0].action_latency_steps)
        """The last L commands (Δxyz, Δrpy): sent, not yet executed (L = the episode's latency; empty when 0)."""

    def act(self, env: TwinTaskEnv) -> np.ndarray:
        """The next action float32[7]: Δxyz, Δrpy (intrinsic XYZ Euler of the base-frame rotation), gripper."""
        if self.index >= len(self.waypoints):  # plan done: hold still
            return self._sent(np.array([0, 0, 0, 0, 0, 0, self.waypoints[-1].gripper], dtype=np.float32))
        wp = self.waypoints[self.index]
        pos = _np(env.agent.tcp.pose.p)
        rot = Rotation.from_quat(_np(env.agent.tcp.pose.q), scalar_first=True)
        for delta in self.pending:  # where the TCP goes once the pending commands run (the controller's convention)
            pos, rot = pos + delta[:3], Rotation.from_euler("XYZ", delta[3:6]) * rot
        err = wp.target(env) - pos
        rot_err = (Rotation.from_euler("z", wp.yaw) * DOWN * rot.inv()).as_rotvec()
        self._advance(np.linalg.norm(err) <= wp.tol and np.linalg.norm(rot_err) <= ROT_TOL, wp)
        dpos = np.clip(POS_GAIN * err, -wp.speed, wp.speed)
        drot = Rotation.from_rotvec(_clip_norm(ROT_GAIN * rot_err, MAX_ROT_SPEED)).as_euler("XYZ")
        if self.noise_std > 0:
            c = NOISE_CORRELATION
            self.noise = c * self.noise + math.sqrt(1 - c * c) * self.noise_std * self.rng.standard_normal(3)
            dpos = dpos + self.noise
        return self._sent(np.concatenate([dpos, drot, [wp.gripper]]).astype(np.float32))

    def _sent(self, action: np.ndarray) -> np.ndarray:
        self.pending.append(action[:6].astype(np.float64))
        return action

    def _advance(self, reached: bool, wp: Waypoint) -> None:
        self.steps += 1
        self.settled += int(reached)
        if self.settled > wp.settle or self.steps >= wp.timeout:
            self.index, self.steps, self.settled = self.index + 1, 0, 0


def _clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = np.linalg.norm(v)
    return v if n <= limit else v * (limit / n)


def make_expert(task: str, domain: DomainConfig, teleop_noise: bool = True) -> WaypointExpert:
    """The scripted expert of `task`; with `teleop_noise` it adds the domain's `demo_noise_std`."""
    return WaypointExpert(PLANS[task], noise_std=domain.demo_noise_std if teleop_noise else 0.0)


# ----------------------------------------------------------------------------- episodes
@dataclass
class ExpertEpisode:
    frames: list[dict]
    """One dict per control step: image (uint8 H×W×3, or None with state obs), state float32[8],
    action float32[7] (the command, before the domain's latency and noise), task (the instruction)."""
    success: bool
    seed: int


def run_expert_episode(env: TwinTaskEnv, expert: WaypointExpert, seed: int, dart_noise_std: float = 0.0) -> ExpertEpisode:
    """Reset `env` (num_envs = 1) with `seed`, run the expert until success or the time limit, record frames.

    dart_noise_std > 0 (DART, Laskey et al. 2017): the env executes the expert's action plus OU noise of this std on
    Δxyz (m per step), while the frame records the expert's clean action. The closed-loop expert then demonstrates
    how to recover from the small drifts a learned policy makes, which noiseless scripted demos never show."""
    if env.num_envs != 1:
        raise ValueError(f"run_expert_episode needs an env with num_envs=1, got {env.num_envs}")
    if dart_noise_std < 0:
        raise ValueError(f"run_expert_episode: dart_noise_std must be >= 0, got {dart_noise_std}")
    obs, _ = env.reset(seed=seed)
    expert.reset(env, seed)
    rng, push = np.random.default_rng([seed, 7]), np.zeros(3)
    frames, success = [], False
    while True:
        action = expert.act(env)
        image = obs[IMAGE_KEY][0].cpu().numpy() if IMAGE_KEY in obs else None
        frames.append(dict(image=image, state=obs[STATE_KEY][0].cpu().numpy(), action=action,
                           task=env.instructions[0]))
        if dart_noise_std > 0:
            c = NOISE_CORRELATION
            push = c * push + math.sqrt(1 - c * c) * dart_noise_std * rng.standard_normal(3)
            action = action.copy()
            action[:3] += push.astype(np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        success = bool(info["success"][0])
        if success or bool(terminated[0]) or bool(truncated[0]):
            return ExpertEpisode(frames=frames, success=success, seed=seed)
