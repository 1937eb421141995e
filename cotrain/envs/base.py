"""What every twin task shares: robot, table, camera, lighting, the domain's action latency and noise, the event
reward, the instruction, the cotrain observation, and a control step without observation (for chunked stepping).

A task subclass implements, in call order: `_load_objects`, `_initialize_objects` (which also sets the
instructions), `evaluate` (returns at least `success` and `milestone` — the task's "grasp" event), and
`compute_dense_reward` (at most `DENSE_REWARD_MAX`); and `scene_labels` (the poses named in `SCENE_LABELS`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import sapien
import torch
from mani_skill.envs.sapien_env import BaseEnv
from mani_skill.sensors.camera import CameraConfig
from mani_skill.utils import common, sapien_utils
from mani_skill.utils.structs.types import SimConfig

from cotrain.calibration.camera_effects import CameraEffects, apply_camera_effects
from cotrain.data.spec import IMAGE_KEY, STATE_KEY
from cotrain.envs.config import TaskConfig
from cotrain.envs.robot import CONTROL_MODE, MANISKILL_ROBOT_UID, REST_QPOS, ROBOT_BASE_XYZ, ROBOT_UID, clip_action
from cotrain.envs.scene import build_table

CAMERA_NAME = "main"
SIM_FREQ = 100
CONTROL_FREQ = 10
ROBOT_INIT_QPOS_NOISE = 0.02
"""Std (rad) of the noise on the arm joints at reset."""
HOLD_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
"""What the latency buffer executes before the first command arrives: stay, gripper open."""

# Event reward (RLinf): grasp +1 (first time per episode), success +5 (each time it is reached),
# lost success -2 (each time it is lost), all divided by EVENT_REWARD_SCALE.
GRASP_BONUS = 1.0
SUCCESS_BONUS = 5.0
LOST_SUCCESS_PENALTY = 2.0
EVENT_REWARD_SCALE = 5.0

REWARD_MODES = {"event": "sparse", "dense": "normalized_dense"}
OBS_MODES = {"state": "state_dict", "rgb": "rgb"}


def ee_lag_beta(time_constant: float, dt: float) -> float:
    """β = exp(−dt/τ) of a first-order lag sampled every dt (0 for τ = 0: no lag)."""
    return float(np.exp(-dt / time_constant)) if time_constant > 0 else 0.0


class TwinTaskEnv(BaseEnv):
    SUPPORTED_ROBOTS = [ROBOT_UID, MANISKILL_ROBOT_UID]
    SUPPORTED_OBS_MODES = ("state_dict", "rgb")
    SUPPORTED_REWARD_MODES = ("sparse", "normalized_dense", "dense", "none")
    DENSE_REWARD_MAX: float
    """Upper bound of `compute_dense_reward`; the normalised dense reward divides by it."""
    SCENE_LABELS: tuple[str, ...]
    """Names of the columns of `scene_labels()`."""

    def __init__(self, task_cfg: TaskConfig, domain: str = "sim", variation: str = "train",
                 obs_mode: Literal["state", "rgb"] = "rgb", num_envs: int = 1, sim_backend: str = "physx_cpu",
                 render_backend: str = "auto", robot_uid: str = ROBOT_UID):
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {list(OBS_MODES)}, got {obs_mode!r}")
        if robot_uid not in self.SUPPORTED_ROBOTS:
            raise ValueError(f"robot_uid must be one of {self.SUPPORTED_ROBOTS}, got {robot_uid!r}")
        self.task_cfg = task_cfg
        self.domain_name = domain
        self.domain = task_cfg.domain(domain)
        self.variation_name = variation
        self.variation = task_cfg.variation(variation)
        self.instructions: list[str] = [""] * num_envs
        if render_backend == "auto":
            render_backend = ("gpu" if torch.cuda.is_available() else "cpu") if obs_mode == "rgb" else "none"
        super().__init__(
            num_envs=num_envs,
            obs_mode=OBS_MODES[obs_mode],
            reward_mode=REWARD_MODES[task_cfg.reward],
            control_mode=CONTROL_MODE,
            robot_uids=robot_uid,
            sim_backend=sim_backend,
            render_backend=render_backend,
        )

    @property
    def _default_sim_config(self):
        return SimConfig(sim_freq=SIM_FREQ, control_freq=CONTROL_FREQ)

    @property
    def _default_sensor_configs(self):
        cam, dom = self.task_cfg.camera, self.domain
        eye = np.add(cam.eye, dom.camera_eye_offset)
        target = np.add(cam.target, dom.camera_target_offset)
        pose = sapien_utils.look_at(eye=eye.tolist(), target=target.tolist())
        return [CameraConfig(CAMERA_NAME, pose, cam.width, cam.height, cam.fov, 0.01, 10)]

    @property
    def _default_human_render_camera_configs(self):
        cam, dom = self.task_cfg.camera, self.domain
        pose = sapien_utils.look_at(eye=np.add(cam.eye, dom.camera_eye_offset).tolist(),
                                    target=np.add(cam.target, dom.camera_target_offset).tolist())
        return CameraConfig("render_camera", pose, 384, 384, cam.fov, 0.01, 10)

    def _load_agent(self, options: dict):
        super()._load_agent(options, sapien.Pose(p=list(ROBOT_BASE_XYZ)))

    def _load_lighting(self, options: dict):
        self.scene.set_ambient_light(list(self.domain.ambient_light))
        self.scene.add_directional_light(list(self.domain.light_direction), list(self.domain.light_color))

    def _load_scene(self, options: dict):
        self.table = build_table(self.scene, self.domain)
        n, latency = self.num_envs, self.domain.action_latency_steps
        self._pending_actions = torch.tensor(HOLD_ACTION, device=self.device).repeat(latency, n, 1)
        self._lagged_delta = torch.zeros(n, 6, device=self.device)
        self._ever_milestone = torch.zeros(n, dtype=torch.bool, device=self.device)
        self._was_success = torch.zeros(n, dtype=torch.bool, device=self.device)
        self._load_objects(options)

    def _load_objects(self, options: dict):
        raise NotImplementedError

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict):
        b = len(env_idx)
        qpos = torch.tensor(REST_QPOS, device=self.device).repeat(b, 1)
        qpos[:, :7] += torch.randn(b, 7, device=self.device) * ROBOT_INIT_QPOS_NOISE
        self.agent.reset(qpos)
        self.agent.robot.set_pose(sapien.Pose(p=list(ROBOT_BASE_XYZ)))
        self._pending_actions[:, env_idx] = torch.tensor(HOLD_ACTION, device=self.device)
        self._lagged_delta[env_idx] = 0.0
        self._ever_milestone[env_idx] = False
        self._was_success[env_idx] = False
        self._initialize_objects(env_idx)

    def _initialize_objects(self, env_idx: torch.Tensor):
        raise NotImplementedError

    # ----------------------------------------------------------------- observation
    def get_obs(self, info: dict | None = None, unflattened: bool = False):
        """The cotrain observation (without the task string; see `instructions`): state [N, 8], image [N, H, W, 3]."""
        obs = {STATE_KEY: self.agent.ee_state()}
        if self.obs_mode == "rgb":
            obs[IMAGE_KEY] = self._camera_frames(self._get_obs_sensor_data()[CAMERA_NAME]["rgb"])
        return obs

    def _camera_frames(self, rgb: torch.Tensor) -> torch.Tensor:
        """The domain's camera effects on the rendered frames [N, H, W, 3], noise seeded by episode seed and step."""
        effects = self.domain.camera_effects
        if effects == CameraEffects():
            return rgb
        steps = self.elapsed_steps.cpu().numpy()
        frames = [apply_camera_effects(rgb[i].cpu().numpy(), effects, int(self._episode_seed[i]), int(steps[i]))
                  for i in range(len(rgb))]
        return torch.from_numpy(np.stack(frames)).to(rgb.device)

    # ----------------------------------------------------------------- acting
    def _step_action(self, action):
        """Clip, add the domain's action noise, delay by its latency and lag by its end-effector response, then run
        one control step."""
        if action is None:
            return super()._step_action(None)
        a = clip_action(common.to_tensor(action, device=self.device).float().reshape(self.num_envs, -1))
        if self.domain.action_noise_std > 0:
            noise = self._batched_episode_rng.normal(0.0, self.domain.action_noise_std, size=6)
            a[:, :6] += torch.as_tensor(noise, dtype=a.dtype, device=self.device).reshape(self.num_envs, 6)
        if self.domain.action_latency_steps > 0:
            queued = torch.cat([self._pending_actions, a[None]], dim=0)
            a, self._pending_actions = queued[0], queued[1:]
        if self.domain.ee_lag_time_constant > 0:
            beta = ee_lag_beta(self.domain.ee_lag_time_constant, 1.0 / CONTROL_FREQ)
            a = a.clone()
            a[:, :6] = beta * self._lagged_delta + (1.0 - beta) * a[:, :6]  # first-order lag on the target
            self._lagged_delta = a[:, :6].clone()
        return super()._step_action(a)

    def step(self, action):
        obs, reward, _, _, info = super().step(action)
        terminated, truncated = self._done_flags(info)
        return obs, reward, terminated, truncated, info

    def step_without_obs(self, action) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One control step exactly like `step` but without rendering or building an observation.

        Returns (reward, terminated, truncated, info). Used for the H−1 intermediate steps of an action chunk.
        """
        action = self._step_action(action)
        self._elapsed_steps += 1
        info = self.get_info()
        reward = self.get_reward(obs=None, action=action, info=info)
        terminated, truncated = self._done_flags(info)
        return reward, terminated, truncated, info

    def _done_flags(self, info: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.task_cfg.terminate_on_success:
            terminated = info["success"].clone()
        else:
            terminated = torch.zeros_like(info["success"])
        truncated = self.elapsed_steps >= self.task_cfg.max_episode_steps
        return terminated, truncated

    # ----------------------------------------------------------------- reward
    def compute_sparse_reward(self, obs, action: torch.Tensor, info: dict) -> torch.Tensor:
        """Event reward: (GRASP_BONUS·first milestone + SUCCESS_BONUS·gained − LOST_SUCCESS_PENALTY·lost) / scale."""
        milestone, success = info["milestone"], info["success"]
        first_milestone = milestone & ~self._ever_milestone
        gained, lost = success & ~self._was_success, ~success & self._was_success
        self._ever_milestone |= milestone
        self._was_success = success.clone()
        reward = GRASP_BONUS * first_milestone + SUCCESS_BONUS * gained - LOST_SUCCESS_PENALTY * lost
        return reward.float() / EVENT_REWARD_SCALE

    def compute_normalized_dense_reward(self, obs, action: torch.Tensor, info: dict) -> torch.Tensor:
        """The task's shaped reward / DENSE_REWARD_MAX, in [0, 1] per step — except when success ends the episode
        (terminate_on_success): the terminal step pays 1 for itself and 1 for each step the time limit had left,
        what staying successful would have earned. Without it a quick success returns 1 while failing slowly for
        80 steps returns ~0.2 per step, and PPO learnt to fail slowly (pick_place: success 41 % → 0 %, docs/envs.md)."""
        reward = self.compute_dense_reward(obs=obs, action=action, info=info) / self.DENSE_REWARD_MAX
        if self.task_cfg.terminate_on_success:
            remaining = (self.task_cfg.max_episode_steps - self.elapsed_steps).clamp(min=0).to(reward.dtype)
            reward = torch.where(info["success"], 1.0 + remaining, reward)
        return reward

    def scene_labels(self) -> torch.Tensor:
        """Where the task's objects are, [N, len(SCENE_LABELS)] (metres, radians): what the policy must read from
        the camera to do the task. The targets of `cotrain.pretrain_encoder`."""
        raise NotImplementedError(f"{type(self).__name__} defines no scene_labels")

    # ----------------------------------------------------------------- helpers for tasks and experts
    @property
    def tcp_pos(self) -> torch.Tensor:
        return self.agent.tcp.pose.p

    def fingers_touch(self, obj) -> torch.Tensor:
        """Whether either finger touches `obj` (an actor or link) [N]."""
        forces = self.agent.finger_contact_forces(obj)
        return (torch.linalg.norm(forces[0], dim=1) > 1e-3) | (torch.linalg.norm(forces[1], dim=1) > 1e-3)
