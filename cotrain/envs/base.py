"""What every twin task shares: robot, table, camera, lighting, the domain's action latency (with its jitter) and
noise, the event reward, the instruction, the cotrain observation, a control step without observation (for chunked
stepping), and the per-episode domain randomisation of training envs, and the domain's greenscreen background.

Greenscreen (a domain with `background`, `cotrain.calibrate` writes one): as ManiSkill's `BaseDigitalTwinEnv`, the
camera also renders segmentation and the observed frame is the background wherever the segmentation shows neither a
robot link nor a task object (the table, the floor, nothing), the render elsewhere; then the domain's camera effects.
One background serves every sub-scene. Domains without one render no segmentation and their frames are unchanged.

Randomisation (`randomize=True`, training domains only; `cotrain.envs.episode_domain`): at every reset each
sub-scene being reset draws `sample_domain(domain, task_cfg.randomization, <its episode seed>)` and its episode runs
in that domain (`episode_domains[i]`): table and palette colours, light, the camera's pose, the friction of the
table and the task's bodies, the mass of the task's dynamic bodies, and the action latency (per sub-scene; the
commands in flight have slots for the widest range). The scene is changed in place, never reconfigured; ManiSkill's
episode RNG is not drawn from, so a seed gives the same initial state with or without randomisation, and ranges of
zero width (every shipped task config) leave the env exactly as with randomize=False. The real-proxy is never
randomised (a ConfigError); evaluation builds its envs with randomize=False.

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
from cotrain.calibration.greenscreen import composite
from cotrain.calibration.randomization import sample_domain
from cotrain.data.spec import IMAGE_KEY, STATE_KEY
from cotrain.envs.config import CameraConfig as TaskCamera
from cotrain.envs.config import DomainConfig, TaskConfig
from cotrain.envs.episode_domain import BuiltMasses, check_randomize, domain_bodies, set_friction, set_lights
from cotrain.envs.robot import CONTROL_MODE, MANISKILL_ROBOT_UID, REST_QPOS, ROBOT_BASE_XYZ, ROBOT_UID, clip_action
from cotrain.envs.scene import build_table, set_color, set_palette_colors
from cotrain.errors import ConfigError

CAMERA_NAME = "main"
RENDER_CAMERA_NAME = "render_camera"
SIM_FREQ = 100
CONTROL_FREQ = 10
ROBOT_INIT_QPOS_NOISE = 0.02
"""Std (rad) of the noise on the arm joints at reset."""
HOLD_GRIPPER = 1.0
"""The gripper command held before the first command arrives: open. A step with no command arriving holds zero
Δpose and the last executed gripper command."""

# Event reward (RLinf): grasp +1 (first time per episode), success +5 (each time it is reached),
# lost success -2 (each time it is lost), all divided by EVENT_REWARD_SCALE.
GRASP_BONUS = 1.0
SUCCESS_BONUS = 5.0
LOST_SUCCESS_PENALTY = 2.0
EVENT_REWARD_SCALE = 5.0

REWARD_MODES = {"event": "sparse", "dense": "normalized_dense"}
OBS_MODES = {"state": "state_dict", "rgb": "rgb"}
GREENSCREEN_OBS_MODE = "rgb+segmentation"
"""ManiSkill's observation mode of an rgb env whose domain has a greenscreen background."""


def ee_lag_beta(time_constant: float, dt: float) -> float:
    """β = exp(−dt/τ) of a first-order lag sampled every dt (0 for τ = 0: no lag)."""
    return float(np.exp(-dt / time_constant)) if time_constant > 0 else 0.0


def load_background(task_cfg: TaskConfig, domain: str) -> np.ndarray | None:
    """Domain `domain`'s greenscreen background, uint8 [H, W, 3] at the camera's size; None without one. A missing
    file, an unreadable one or one of another size is one ConfigError naming the domain, the path and the shape."""
    path = task_cfg.background_path(domain)
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    cam = task_cfg.camera
    expected = [cam.height, cam.width, 3]
    where = f"{task_cfg.source}: domains.{domain}.background {path}"
    if not path.is_file():
        raise ConfigError(f"{where}: no such file (expected a PNG of shape {expected}, the camera's size)")
    try:
        with Image.open(path) as image:
            background = np.array(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ConfigError(f"{where}: not an image ({e})") from None
    if list(background.shape) != expected:
        raise ConfigError(f"{where}: shape {list(background.shape)}, expected {expected} (the camera's height, "
                          f"width, 3)")
    return background


def camera_pose(cam: TaskCamera, dom: DomainConfig):
    """The task camera's pose (ManiSkill `Pose`) moved by the domain's eye and target offsets."""
    return sapien_utils.look_at(eye=np.add(cam.eye, dom.camera_eye_offset).tolist(),
                                target=np.add(cam.target, dom.camera_target_offset).tolist())


class TwinTaskEnv(BaseEnv):
    SUPPORTED_ROBOTS = [ROBOT_UID, MANISKILL_ROBOT_UID]
    SUPPORTED_OBS_MODES = ("state_dict", "rgb", GREENSCREEN_OBS_MODE)
    SUPPORTED_REWARD_MODES = ("sparse", "normalized_dense", "dense", "none")
    DENSE_REWARD_MAX: float
    """Upper bound of `compute_dense_reward`; the normalised dense reward divides by it."""
    SCENE_LABELS: tuple[str, ...]
    """Names of the columns of `scene_labels()`."""

    def __init__(self, task_cfg: TaskConfig, domain: str = "sim", variation: str = "train",
                 obs_mode: Literal["state", "rgb"] = "rgb", num_envs: int = 1, sim_backend: str = "physx_cpu",
                 render_backend: str = "auto", robot_uid: str = ROBOT_UID, randomize: bool = False):
        """`randomize`: draw each episode's domain around `domain` from `task_cfg.randomization` (training envs;
        see the module docstring). A ConfigError on the real-proxy, and on any backend but physx_cpu for ranges
        that cannot vary per sub-scene there (`cotrain.envs.episode_domain.check_randomize`)."""
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {list(OBS_MODES)}, got {obs_mode!r}")
        if robot_uid not in self.SUPPORTED_ROBOTS:
            raise ValueError(f"robot_uid must be one of {self.SUPPORTED_ROBOTS}, got {robot_uid!r}")
        self.task_cfg = task_cfg
        self.domain_name = domain
        self.domain = task_cfg.domain(domain)
        if randomize:
            check_randomize(task_cfg, domain, gpu_sim=sim_backend != "physx_cpu")
        self._randomizing = randomize and not task_cfg.randomization.is_zero
        """Whether resets draw episode domains at all (zero ranges: the sample is `domain`, nothing to do)."""
        self._reset_seeded = False
        self.variation_name = variation
        self.variation = task_cfg.variation(variation)
        self.instructions: list[str] = [""] * num_envs
        self._background = load_background(task_cfg, domain)
        """The domain's greenscreen background (uint8 [H, W, 3]; a tensor on the render device once used), or None."""
        self._keep_table: torch.Tensor | None = None
        """Greenscreen: [num_envs, largest segmentation id + 1], whether an id is a robot link or a task object in
        that sub-scene (`_after_reconfigure`)."""
        if render_backend == "auto":
            render_backend = ("gpu" if torch.cuda.is_available() else "cpu") if obs_mode == "rgb" else "none"
        greenscreen = obs_mode == "rgb" and self._background is not None
        super().__init__(
            num_envs=num_envs,
            obs_mode=GREENSCREEN_OBS_MODE if greenscreen else OBS_MODES[obs_mode],
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
        cam = self.task_cfg.camera
        return [CameraConfig(CAMERA_NAME, camera_pose(cam, self.domain), cam.width, cam.height, cam.fov, 0.01, 10)]

    @property
    def _default_human_render_camera_configs(self):
        return CameraConfig(RENDER_CAMERA_NAME, camera_pose(self.task_cfg.camera, self.domain), 384, 384,
                            self.task_cfg.camera.fov, 0.01, 10)

    def _load_agent(self, options: dict):
        super()._load_agent(options, sapien.Pose(p=list(ROBOT_BASE_XYZ)))

    def _load_lighting(self, options: dict):
        self.scene.set_ambient_light(list(self.domain.ambient_light))
        self.scene.add_directional_light(list(self.domain.light_direction), list(self.domain.light_color))

    def _load_scene(self, options: dict):
        self.table = build_table(self.scene, self.domain)
        n = self.num_envs
        self.episode_domains: list[DomainConfig] = [self.domain] * n
        """The domain each sub-scene's episode runs in (and its scene shows): `domain` unless randomised."""
        self._latency = torch.full((n,), self.domain.action_latency_steps, dtype=torch.long, device=self.device)
        longest = (self.domain.action_latency_steps + self.domain.action_latency_jitter_steps
                   + (self.task_cfg.randomization.latency_steps if self._randomizing else 0))
        self._arriving = torch.zeros(longest + 1, n, 7, device=self.device)
        """Slot k: the newest command that arrives k control steps from now (valid where `_has_arriving`); as many
        slots as the longest delay an episode can draw, plus now."""
        self._has_arriving = torch.zeros(longest + 1, n, dtype=torch.bool, device=self.device)
        self._last_arrival = torch.full((n,), -1, dtype=torch.long, device=self.device)
        """Steps from now until the last command sent arrives (negative: it has arrived)."""
        self._last_gripper = torch.full((n,), HOLD_GRIPPER, device=self.device)
        """The gripper command a step without a new arrival holds."""
        self._env_rows = torch.arange(n, device=self.device)
        self._lagged_delta = torch.zeros(n, 6, device=self.device)
        self._ever_milestone = torch.zeros(n, dtype=torch.bool, device=self.device)
        self._was_success = torch.zeros(n, dtype=torch.bool, device=self.device)
        self._load_objects(options)
        articulations = [a for a in self.scene.articulations.values() if a is not self.agent.robot]
        self._domain_bodies = domain_bodies(list(self.scene.actors.values()), articulations, self.table)
        self._built_masses = BuiltMasses(self._domain_bodies, n) if self._randomizing else None

    def _load_objects(self, options: dict):
        raise NotImplementedError

    def _after_reconfigure(self, options: dict):
        super()._after_reconfigure(options)
        if self.obs_mode == GREENSCREEN_OBS_MODE:  # segmentation ids are known once the scene is built
            self._keep_table = self._greenscreen_keep_table()

    def _greenscreen_keep_table(self) -> torch.Tensor:
        """Which segmentation ids the greenscreen keeps, per sub-scene: every robot link and every task object (the
        actors that are not static, the links of the task's articulations); not the table, the floor or id 0."""
        articulations = self.scene.articulations.values()
        kept = [link for art in articulations for link in art.get_links()]
        kept += [actor for actor in self.scene.actors.values() if actor.px_body_type != "static"]
        ids = torch.stack([body.per_scene_id.to(torch.long).cpu() for body in kept], dim=1)  # [num_envs, K]
        size = max(self.segmentation_id_map) + 1
        table = torch.zeros(self.num_envs, size, dtype=torch.bool)
        table[torch.arange(self.num_envs)[:, None], ids] = True
        return table

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict):
        b = len(env_idx)
        qpos = torch.tensor(REST_QPOS, device=self.device).repeat(b, 1)
        qpos[:, :7] += torch.randn(b, 7, device=self.device) * ROBOT_INIT_QPOS_NOISE
        self.agent.reset(qpos)
        self.agent.robot.set_pose(sapien.Pose(p=list(ROBOT_BASE_XYZ)))
        self._has_arriving[:, env_idx] = False
        self._last_arrival[env_idx] = -1
        self._last_gripper[env_idx] = HOLD_GRIPPER
        self._lagged_delta[env_idx] = 0.0
        self._ever_milestone[env_idx] = False
        self._was_success[env_idx] = False
        if self._randomizing:
            for i, seed in zip(env_idx.tolist(), self._domain_seeds(env_idx)):
                self._show_domain(i, sample_domain(self.domain, self.task_cfg.randomization, seed))
        self._initialize_objects(env_idx)

    def _initialize_objects(self, env_idx: torch.Tensor):
        raise NotImplementedError

    # ----------------------------------------------------------------- per-episode domains
    def reset(self, seed=None, options=None):
        self._reset_seeded = seed is not None
        return super().reset(seed=seed, options=options)

    def _domain_seeds(self, env_idx: torch.Tensor) -> list[int]:
        """The seed of each reset sub-scene's domain sample: its episode seed. An unseeded reset leaves ManiSkill's
        episode seed as it was, so it draws a fresh one from ManiSkill's main RNG (as its enhanced determinism
        would; never from the episode RNG)."""
        if self._reset_seeded:
            return [int(self._episode_seed[i]) for i in env_idx.tolist()]
        return [int(self._batched_main_rng[i].randint(2**31)) for i in env_idx.tolist()]

    def _show_domain(self, i: int, new: DomainConfig) -> None:
        """Bring sub-scene i from the domain it shows (`episode_domains[i]`) to `new` in place, changing only what
        differs. A task with more domain-dependent parts extends it (the drawer's joint friction)."""
        old = self.episode_domains[i]
        if self.scene.can_render():
            if new.table_rgba != old.table_rgba:
                set_color(self.table, new.table_rgba, [i])
            if new.palette != old.palette:
                for body in self._domain_bodies:
                    set_palette_colors(body, new.palette, i)
            if (new.ambient_light, new.light_color) != (old.ambient_light, old.light_color):
                set_lights(self.scene.sub_scenes[i], new.ambient_light, new.light_color)
            if (new.camera_eye_offset, new.camera_target_offset) != (old.camera_eye_offset, old.camera_target_offset):
                pose = camera_pose(self.task_cfg.camera, new).sp  # one sub-scene (camera ranges are CPU-only)
                self._sensors[CAMERA_NAME].camera.set_local_pose(pose)
                self._human_render_cameras[RENDER_CAMERA_NAME].camera.set_local_pose(pose)
        if new.friction != old.friction:
            set_friction(self._domain_bodies, i, new.friction)
        if new.mass_scale != old.mass_scale:
            self._built_masses.scale(i, new.mass_scale / self.domain.mass_scale)
        self._latency[i] = new.action_latency_steps
        self.episode_domains[i] = new

    # ----------------------------------------------------------------- observation
    def get_obs(self, info: dict | None = None, unflattened: bool = False):
        """The cotrain observation (without the task string; see `instructions`): state [N, 8], image [N, H, W, 3]."""
        obs = {STATE_KEY: self.agent.ee_state()}
        if self.obs_mode_struct.visual.rgb:
            camera = self._get_obs_sensor_data()[CAMERA_NAME]
            rgb = camera["rgb"] if self._keep_table is None else self._greenscreen(camera["rgb"], camera["segmentation"])
            obs[IMAGE_KEY] = self._camera_frames(rgb)
        return obs

    def _greenscreen(self, rgb: torch.Tensor, segmentation: torch.Tensor) -> torch.Tensor:
        """The render [N, H, W, 3] where the segmentation [N, H, W, 1] shows a robot link or a task object, the
        domain's background elsewhere."""
        if not isinstance(self._background, torch.Tensor) or self._background.device != rgb.device:
            self._background = torch.as_tensor(self._background, device=rgb.device)
            self._keep_table = self._keep_table.to(rgb.device)
        rows = torch.arange(len(rgb), device=rgb.device)[:, None, None]
        keep = self._keep_table[rows, segmentation[..., 0].to(torch.long)]
        return composite(rgb, keep, self._background)

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
        """Clip, add the domain's action noise, delay by the episode's latency and the domain's jitter (`_deliver`)
        and lag by the domain's end-effector response, then run one control step."""
        if action is None:
            return super()._step_action(None)
        a = clip_action(common.to_tensor(action, device=self.device).float().reshape(self.num_envs, -1))
        if self.domain.action_noise_std > 0:
            noise = self._batched_episode_rng.normal(0.0, self.domain.action_noise_std, size=6)
            a[:, :6] += torch.as_tensor(noise, dtype=a.dtype, device=self.device).reshape(self.num_envs, 6)
        a = self._deliver(a)
        if self.domain.ee_lag_time_constant > 0:
            beta = ee_lag_beta(self.domain.ee_lag_time_constant, 1.0 / CONTROL_FREQ)
            a = a.clone()
            a[:, :6] = beta * self._lagged_delta + (1.0 - beta) * a[:, :6]  # first-order lag on the target
            self._lagged_delta = a[:, :6].clone()
        return super()._step_action(a)

    def _deliver(self, a: torch.Tensor) -> torch.Tensor:
        """Send command `a` [N, 7] over the delayed link and return what executes this step: the newest command that
        arrives now, else a hold (`DomainConfig.action_latency_jitter_steps` gives the semantics)."""
        delay = self._latency
        jitter = self.domain.action_latency_jitter_steps
        if jitter > 0:  # drawn only with jitter: without it the episode RNG's stream is the one it always was
            extra = self._batched_episode_rng.randint(0, jitter + 1)
            delay = delay + torch.as_tensor(extra, dtype=torch.long, device=self.device)
        arrival = torch.maximum(delay, self._last_arrival)  # in order: never before the command sent before it
        self._arriving[arrival, self._env_rows] = a  # a newer command arriving in the same step replaces an older
        self._has_arriving[arrival, self._env_rows] = True
        hold = torch.zeros_like(a)
        hold[:, 6] = self._last_gripper
        executed = torch.where(self._has_arriving[0, :, None], self._arriving[0], hold)
        self._last_gripper = executed[:, 6].clone()
        self._last_arrival = arrival - 1
        self._arriving = self._arriving.roll(-1, dims=0)
        self._has_arriving = self._has_arriving.roll(-1, dims=0)
        self._has_arriving[-1] = False
        return executed

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
