"""Typed, strict task configs: one `configs/task/<task>.yaml` per twin task, with its domains and variations.

A task config names the task, its episode settings, the third-person camera, the *variations* (the training
distribution and held-out ones: unseen shapes/colours, unseen initial-state ranges) and the *domains*: `sim` and
`real_proxy`, the stand-in for the real world (other colours/textures and lighting, a camera pose offset, other
friction and mass, slightly larger objects, one step of action latency with jitter, and action noise). Any unknown
key, task, domain or variation is one `ConfigError` naming the file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from cotrain.calibration.camera_effects import CameraEffects
from cotrain.calibration.randomization import RandomizationRanges
from cotrain.config_io import config_from_dict
from cotrain.errors import ConfigError

Vec2 = tuple[float, float]
Vec3 = tuple[float, float, float]
RGBA = tuple[float, float, float, float]

TASK_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "task"


@dataclass(frozen=True)
class DomainConfig:
    """The visual and physical settings of one domain (`sim`, or `real_proxy`: the stand-in for the real world)."""

    table_rgba: RGBA
    """Base colour of the table top."""
    table_texture_noise: float
    """Amplitude (0..1) of a procedural grain texture on the table; 0 is a plain colour."""
    palette: dict[str, RGBA]
    """Colour name -> RGBA for task objects. Instructions say the name; each domain renders it its own way."""
    ambient_light: Vec3
    """Ambient light colour."""
    light_direction: Vec3
    """Direction of the one directional light."""
    light_color: Vec3
    """Colour (and intensity) of the directional light."""
    camera_eye_offset: Vec3
    """Added to the task's camera eye position (m)."""
    camera_target_offset: Vec3
    """Added to the task's camera look-at target (m)."""
    friction: float
    """Static and dynamic friction of task objects, the table and the drawer (also scales drawer joint friction)."""
    mass_scale: float
    """Multiplies the density of task objects and the drawer."""
    action_latency_steps: int
    """Control steps between a command and its execution (the real-proxy uses 1)."""
    action_noise_std: float
    """Std of Gaussian noise added to the executed Δxyz (m) and Δrpy (rad) at every control step."""
    demo_noise_std: float
    """Std of the smooth noise the scripted expert adds to its commands when recording demos in this domain
    (teleop-like in the real-proxy)."""
    ee_lag_time_constant: float = 0.0
    """Time constant τ (s) of a first-order lag between the commanded end-effector target and the one the controller
    tracks: the executed Δpose is β·(last executed) + (1 − β)·(command), β = exp(−dt/τ) (a real arm's compliant
    controller). 0: none (the twin's default)."""
    camera_effects: CameraEffects = CameraEffects()
    """Lens, sensor and image-processing effects on the camera frames (`cotrain.calibration.camera_effects`);
    the real-proxy's simulated real camera. Default: none."""
    action_latency_jitter_steps: int = 0
    """Network and driver jitter: each command's delay is `action_latency_steps` plus an integer uniform in
    [0, jitter], drawn per command from the episode's RNG (reproducible per seed). Commands arrive in the order they
    were sent (a late one holds back those behind it, as on one in-order connection: arrival = max(send + delay,
    arrival of the previous command)). Each control step executes the newest command that has arrived since the
    last step; older ones that arrived with it are dropped (the driver replaces its setpoint, it does not replay a
    backlog). A step with no new arrival holds: zero Δpose, the last executed gripper command (open before the first
    command). E.g. latency 0, delays 1, 3, 1 for commands c0, c1, c2 sent at steps 0, 1, 2: c0 arrives at 1, c1 at 4,
    c2 at max(3, 4) = 4; steps 0..4 execute hold, c0, hold, hold, c2 (c1 dropped). 0: a fixed delay (bit for bit
    the twin's behaviour without the field)."""
    object_size_scale: float = 1.0
    """Multiplies the half-sizes (collision and visual) of the task's small objects: pick_place's object and
    push_cube's cubes (the drawer tasks ignore it). The env's `shape` / `cube_half` and the experts follow it."""
    tray_wall_scale: float = 1.0
    """Multiplies the height of pick_place's tray walls (other tasks ignore it); its floor is unchanged."""
    background: str = ""
    """Greenscreen: a PNG of the empty scene at the camera's size (`cotrain.calibrate` writes one), relative to the
    task config file's folder (`TaskConfig.background_path`) or absolute. The env shows it wherever its camera's
    segmentation shows neither the robot nor a task object (`TwinTaskEnv`). "": none (the rendered table and
    floor)."""

    def __post_init__(self) -> None:
        if self.action_latency_steps < 0:
            raise ConfigError(f"action_latency_steps must be >= 0, got {self.action_latency_steps}")
        if self.action_latency_jitter_steps < 0:
            raise ConfigError(f"action_latency_jitter_steps must be >= 0, got {self.action_latency_jitter_steps}")
        if self.ee_lag_time_constant < 0:
            raise ConfigError(f"ee_lag_time_constant must be >= 0, got {self.ee_lag_time_constant}")
        for name in ("friction", "mass_scale", "object_size_scale", "tray_wall_scale"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class PickPlaceVariation:
    """Which objects appear and where, for pick-and-place."""

    shapes: tuple[str, ...]
    """Object shapes drawn per episode (names in `pick_place.SHAPES`)."""
    colors: tuple[str, ...]
    """Object colours drawn per episode (names in the domain palette)."""
    object_xy_center: Vec2
    object_xy_half_extent: Vec2
    """The object's xy is uniform in center ± half_extent (m, world frame; the table top is z = 0)."""
    container_xy_center: Vec2
    container_xy_half_extent: Vec2
    """The tray's xy is uniform in center ± half_extent."""


@dataclass(frozen=True)
class PushCubeVariation:
    """Cube colours and the start row, for push-cube-by-instruction."""

    colors: tuple[str, ...]
    """Three distinct colours are drawn per episode from these; the instruction names one."""
    row_x_range: Vec2
    """x of the row of cubes (uniform in [lo, hi])."""
    row_y_spacing: float
    """Distance between neighbouring cubes along y."""
    jitter: float
    """Each cube's xy is additionally uniform in ± jitter."""


@dataclass(frozen=True)
class DrawerVariation:
    """Where the cabinet stands and how far the drawer starts open."""

    cabinet_xy_center: Vec2
    cabinet_xy_half_extent: Vec2
    """xy of the cabinet's front face centre, uniform in center ± half_extent."""
    cabinet_yaw_range: Vec2
    """Cabinet yaw about z (rad), uniform in [lo, hi]; 0 faces the robot."""
    init_open_fraction: Vec2
    """Initial drawer opening as a fraction of its travel, uniform in [lo, hi]."""


Variation = PickPlaceVariation | PushCubeVariation | DrawerVariation
VARIATION_TYPES: dict[str, type] = {
    "pick_place": PickPlaceVariation,
    "push_cube": PushCubeVariation,
    "open_drawer": DrawerVariation,
    "close_drawer": DrawerVariation,
}
"""The tasks and the variation type of each, known without importing ManiSkill (config parsing stays light; the env
classes, `cotrain.envs.make.ENV_CLASSES`, and the experts' plans, `cotrain.envs.experts.PLANS`, import it)."""
TASKS = tuple(VARIATION_TYPES)


@dataclass(frozen=True)
class CameraConfig:
    """The one third-person camera (before the domain's offsets)."""

    eye: Vec3
    target: Vec3
    fov: float
    """Vertical field of view (rad)."""
    width: int = 128
    height: int = 128


@dataclass(frozen=True)
class TaskConfig:
    """One twin task: episode settings, camera, variations and domains (`configs/task/<task>.yaml`)."""

    task: str
    """One of TASKS."""
    max_episode_steps: int
    """Control steps (10 Hz) before truncation."""
    reward: Literal["event", "dense"]
    """`event`: grasp +1, success +5, lost success −2, all /5 (RLinf); `dense`: the task's shaped reward in [0, 1]
    per step (a success that ends the episode also pays the steps it cuts off: `TwinTaskEnv.compute_normalized_dense_reward`)."""
    terminate_on_success: bool
    """End the episode at the first success (else it runs to the time limit and losing success is penalised)."""
    camera: CameraConfig
    variations: dict[str, Variation]
    """`train` is the training distribution; others (e.g. `heldout`) are for generalisation tests."""
    domains: dict[str, DomainConfig]
    """`sim` and `real_proxy` (never call the real-proxy "real")."""
    randomization: RandomizationRanges = RandomizationRanges()
    """Half-widths of the per-episode randomisation around a domain (`cotrain.calibration.randomization`); all zero
    (the default): none."""
    source: str = field(default="<dict>", compare=False)
    """Where this config was read from (for error messages)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"{self.source}: unknown task {self.task!r} (known: {', '.join(TASKS)})")
        if self.max_episode_steps <= 0:
            raise ConfigError(f"{self.source}: max_episode_steps must be positive, got {self.max_episode_steps}")
        if "train" not in self.variations:
            raise ConfigError(f"{self.source}: variations must contain 'train'")
        for name, var in self.variations.items():
            if not isinstance(var, VARIATION_TYPES[self.task]):
                raise ConfigError(f"{self.source}: variations.{name} is not a {VARIATION_TYPES[self.task].__name__}")
            for color in getattr(var, "colors", ()):
                for dname, dom in self.domains.items():
                    if color not in dom.palette:
                        raise ConfigError(f"{self.source}: variations.{name}.colors: {color!r} is not in "
                                          f"domains.{dname}.palette")

    def domain(self, name: str) -> DomainConfig:
        if name not in self.domains:
            raise ConfigError(f"{self.source}: unknown domain {name!r} (known: {', '.join(self.domains)})")
        return self.domains[name]

    def background_path(self, name: str) -> Path | None:
        """Domain `name`'s greenscreen background as a path (a relative one is taken from the folder of the file this
        config was read from, `source`; the working directory for a config not read from a file); None without."""
        background = self.domain(name).background
        if not background:
            return None
        path = Path(background)
        return path if path.is_absolute() else Path(self.source).parent / path

    def variation(self, name: str) -> Variation:
        if name not in self.variations:
            raise ConfigError(f"{self.source}: unknown variation {name!r} (known: {', '.join(self.variations)})")
        return self.variations[name]

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "TaskConfig":
        """Parse a mapping strictly (a plain dict, or Hydra's `cfg.task` / `dict(cfg.task)`)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        task = data.get("task")
        if task not in TASKS:
            raise ConfigError(f"{source}: unknown task {task!r} (known: {', '.join(TASKS)})")
        return config_from_dict(cls, {**data, "source": source}, source,
                                hints={"variations": dict[str, VARIATION_TYPES[task]]})


def load_task_config(name_or_path: str | Path) -> TaskConfig:
    """Read `configs/task/<name>.yaml` (or a path to a yaml file) into a TaskConfig."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = TASK_CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in TASK_CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown task {str(name_or_path)!r}: no {path} (known: {', '.join(known)})")
    with open(path) as f:
        data = yaml.safe_load(f)
    return TaskConfig.from_dict(data, source=str(path))


def task_file_mapping(path: str | Path) -> dict:
    """A task config file (e.g. the calibrated one `python -m cotrain.calibrate` writes) as the mapping the entry
    points take for `task`, read strictly, with its greenscreen backgrounds as absolute paths (in the file they are
    relative to its folder)."""
    cfg = load_task_config(path)
    domains = {name: dataclasses.replace(d, background=str(cfg.background_path(name).resolve()) if d.background else "")
               for name, d in cfg.domains.items()}
    data = dataclasses.asdict(dataclasses.replace(cfg, domains=domains))
    data.pop("source")
    return _plain(data)


def _plain(value):
    """Tuples as lists, recursively (what a YAML or Hydra mapping holds)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
