"""Typed parameters of every bridge node, and the strict loader of `configs/robot/*.yaml`.

Each node's parameters are one dataclass: the node declares exactly these ROS parameters with these typed defaults
(`declare`), and a robot config is a ROS 2 parameter file whose sections are checked against the same dataclasses
(`load_robot_config`, through `cotrain.config_io`): an unknown node, an unknown key, a wrong type or a value outside a
Literal field's choices is one error line naming the file and key.
The `/**` section holds values shared by every node that declares them (the feature spec: image size, fps).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

import yaml

from cotrain.config_io import config_from_dict, parse_value
from cotrain.data.spec import FeatureSpec
from robot_bridge.safety import SafetyLimits
from robot_bridge.target import TargetLimits

RecorderSource = Literal["teleop", "policy", "intervention", "expert"]
"""What a recorded episode's actions came from (`cotrain.data.provenance.SOURCES`)."""


@dataclass
class SpecParams:
    """The robot config's feature spec (state 8 and action 7 are fixed by the bridge)."""

    image_height: int = 128
    """Image height the camera publishes and the policy sees, px."""
    image_width: int = 128
    """Image width, px."""
    fps: int = 10
    """Control rate, Hz: one action per tick; also the recorded dataset's frame rate."""

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(image_height=self.image_height, image_width=self.image_width, fps=self.fps)


@dataclass
class PolicyParams(SpecParams):
    checkpoint: str = ""
    """Checkpoint directory or training run (its latest checkpoint); empty = no policy loaded (start is refused)."""
    task: str = ""
    """Language instruction fed to the policy (a message on /task replaces it)."""
    n_action_steps: int = 0
    """Actions executed from each predicted chunk before re-querying; 0 = the policy's whole chunk (as cotrain.eval)."""
    stale_obs_ms: float = 200.0
    """Watchdog: a tick whose latest image or state is older than this holds the arm instead of acting."""
    tick_tolerance_ms: float = 10.0
    """A frame up to this early still triggers the tick; a tick this late without a frame is taken by the timer."""
    device: str = "cpu"
    """Torch device for inference."""
    torch_threads: int = 1
    """Torch CPU threads for inference (0 = torch's default). On a 2-core machine 1 thread ran the small VLA in
    16 ms, 2 threads (competing with the other nodes) in 266 ms."""
    prefetch_ticks: int = 0
    """When the next chunk is computed. 0: synchronously, in the tick that needs it, from that tick's observation
    (cotrain.eval's order; the twin). L >= 1 (pace 'clock'): in a worker thread, started by the tick that leaves fewer
    than L actions queued, from that tick's observation, so no tick waits for the policy; the chunk's first action is
    sent L ticks after its observation, and a chunk not ready in L periods holds the arm for a tick ('wait').
    At most the actions executed per chunk."""
    autostart: bool = False
    """Start acting as soon as the node is up (otherwise call /policy/start)."""
    pace: Literal["clock", "frames"] = "clock"
    """'clock': a tick every 1/fps (a frame takes a due tick, the timer a late one). 'frames' (the twin: the env is
    the clock): every new frame takes exactly one tick, as soon as a state stamped no earlier than the frame has
    arrived; the timer never ticks, and `start` ticks the latest frame if nothing answered it yet."""


@dataclass
class FrankaParams:
    backend: Literal["franky", "twin"] = "franky"
    """'franky' (a Franka, or franky-sim) or 'twin' (the ManiSkill real-proxy env)."""
    robot_ip: str = "127.0.0.2"
    """FCI address of the arm (franky backend)."""
    realtime: bool = False
    """Enforce libfranka's realtime scheduling (true on the real robot's RT kernel; false for franky-sim)."""
    state_rate_hz: float = 50.0
    """Rate of /franka/joint_states and /franka/ee_pose, and of the command-timeout check."""
    command_timeout_ms: float = 300.0
    """No command for this long while active -> hold the current pose."""
    translational_stiffness: float = 1500.0
    """Cartesian impedance tracker stiffness, N/m (measured on franky-sim: 1500 tracks ≈ 4.6 mm, 3000 is unstable)."""
    rotational_stiffness: float = 150.0
    """Cartesian impedance tracker rotational stiffness, Nm/rad."""
    gripper_open_width: float = 0.08
    """Width commanded for gripper >= 0, m."""
    gripper_speed: float = 0.1
    """Gripper speed, m/s."""
    gripper_force: float = 20.0
    """Grasp force for gripper < 0, N."""
    workspace_min: list[float] = field(default_factory=lambda: [0.25, -0.35, 0.02])
    """Safety box lower corner (x, y, z), m, robot base frame."""
    workspace_max: list[float] = field(default_factory=lambda: [0.75, 0.35, 0.60])
    """Safety box upper corner, m."""
    max_translation: float = 0.02
    """Largest ‖Δxyz‖ per command, m."""
    max_rotation: float = 0.10
    """Largest ‖Δrpy‖ per command, rad."""
    max_lead: float = 0.03
    """Largest distance the commanded target may lead the measured end-effector position, m (franky backend)."""
    nominal_rpy: list[float] = field(default_factory=lambda: [math.pi, 0.0, 0.0])
    """Nominal end-effector orientation (roll, pitch, yaw), rad, as in observation.state (R = Rz Ry Rx); the default
    is the Franka's top-down home orientation (franky backend)."""
    max_orientation_error: float = 1.0
    """Largest angle between the commanded orientation and `nominal_rpy`, rad: an absolute bound (franky backend)."""
    max_tracking_error: float = 0.045
    """Commanded target this far (m) from the measured position -> hold: the arm does not follow (franky backend)."""
    max_tracking_rotation: float = 0.35
    """Commanded orientation this far (rad) from the measured one -> hold (franky backend)."""
    autostart: bool = False
    """Configure and activate at start-up (otherwise drive the lifecycle through /franka/change_state)."""
    twin_env: str = ""
    """Twin backend: task config (a name in configs/task or a yaml path); the env is its real_proxy domain."""
    twin_seed: int = 0
    """Twin backend: seed of the first episode (episode k resets with twin_seed + k)."""

    def safety_limits(self) -> SafetyLimits:
        return SafetyLimits(workspace_min=tuple(self.workspace_min), workspace_max=tuple(self.workspace_max),
                            max_translation=self.max_translation, max_rotation=self.max_rotation)

    def target_limits(self) -> TargetLimits:
        return TargetLimits(max_lead=self.max_lead, nominal_rpy=tuple(self.nominal_rpy),
                            max_orientation_error=self.max_orientation_error,
                            max_tracking_error=self.max_tracking_error, max_tracking_rotation=self.max_tracking_rotation)


@dataclass
class CameraParams(SpecParams):
    device: str = "0"
    """OpenCV capture source: a device index ('0') or a file/URL."""
    rate_hz: float = 30.0
    """Publishing rate, Hz."""
    frame_id: str = "camera"
    """header.frame_id of the published images."""


@dataclass
class TeleopParams(SpecParams):
    input: Literal["keyboard", "spacemouse", "none"] = "keyboard"
    """'keyboard' (this terminal), 'spacemouse' (needs the pyspacemouse package and a device) or 'none'."""
    linear_speed: float = 0.05
    """End-effector speed at full deflection, m/s."""
    angular_speed: float = 0.3
    """End-effector angular speed at full deflection, rad/s."""
    intervene: bool = False
    """False: drive the arm on /action every tick. True (the policy drives): steps go to /teleop/action only on ticks
    with operator input, which take control from the policy; key h hands it back."""


@dataclass
class RecorderParams(SpecParams):
    dataset_root: str = "datasets/real/default"
    """LeRobot dataset the episodes are appended to."""
    task: str = ""
    """Instruction stored with each frame (a message on /task replaces it)."""
    domain: Literal["real", "real_proxy"] = "real"
    """Provenance domain: 'real' (a physical arm) or 'real_proxy' (the twin backend)."""
    source: RecorderSource = "teleop"
    """Provenance source: 'teleop', 'policy', 'intervention' or 'expert' (the calibration profile's scripted
    motion)."""
    max_sync_skew_ms: float = 100.0
    """An action is paired with the newest image and state at most this much older than the action's stamp."""
    use_video: bool = True
    """Store images as video (LeRobot's default) or as PNG frames."""
    background_dir: str = "datasets/real/background"
    """Where /recorder/capture_background writes the empty-scene frames (PNG; `cotrain.calibrate background_dir=`)."""
    background_frames: int = 10
    """Frames one background capture takes."""
    intervention: bool = False
    """Record LeRobot's per-frame `intervention` flag (True where the operator drove: /franka/applied_action's
    frame_id); an episode with a flagged frame is saved with the provenance source 'intervention'."""


@dataclass
class CalibrationParams(SpecParams):
    steps: int = 40
    """Steps of the calibration motion (even: it returns to its start)."""
    amplitude: float = 0.01
    """Δxyz of one step, m (at the control rate: 10 Hz -> 10 cm/s)."""
    seed: int = 0
    """Seed of the motion's axes and signs."""


NODE_PARAMS: dict[str, type] = {
    "policy": PolicyParams,
    "franka": FrankaParams,
    "camera": CameraParams,
    "teleop": TeleopParams,
    "recorder": RecorderParams,
    "calibration": CalibrationParams,
}
SHARED = "/**"


def resolve(sections: dict[str, dict[str, Any]], where: str) -> dict[str, dict[str, Any]]:
    """Per-node parameter dicts (all fields, typed) from {node or '/**': {key: value}} sections."""
    unknown_nodes = set(sections) - set(NODE_PARAMS) - {SHARED}
    if unknown_nodes:
        raise ValueError(f"{where}: unknown node section(s) {sorted(unknown_nodes)}; known: {sorted(NODE_PARAMS)} and '/**'")
    shared = sections.get(SHARED, {})
    spec_keys = [f.name for f in dataclasses.fields(SpecParams)]
    bad = set(shared) - set(spec_keys)
    if bad:
        raise ValueError(f"{where}: '/**' may only hold the spec keys {spec_keys}, got {sorted(bad)}")
    out: dict[str, dict[str, Any]] = {}
    for node, cls in NODE_PARAMS.items():
        known = {f.name for f in dataclasses.fields(cls)}
        layered = {k: v for k, v in shared.items() if k in known} | sections.get(node, {})
        out[node] = dataclasses.asdict(config_from_dict(cls, layered, where, key=node))
    return out


def read_param_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """{node: {key: value}} from a ROS 2 parameter file (`node: ros__parameters: {...}`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"robot config {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of node names to 'ros__parameters'")
    sections = {}
    for node, body in raw.items():
        name = node if node == SHARED else str(node).lstrip("/")
        if not isinstance(body, dict) or set(body) != {"ros__parameters"} or not isinstance(body["ros__parameters"], dict):
            raise ValueError(f"{path}: section {node!r} must hold exactly one mapping 'ros__parameters'")
        sections[name] = body["ros__parameters"]
    return sections


def load_robot_config(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Resolved parameters of every node: defaults <- file (`/**` then the node's section) <- overrides."""
    sections = read_param_file(path)
    for node, values in (overrides or {}).items():
        sections[node] = sections.get(node, {}) | values
    return resolve(sections, str(path))


def cli_parameters(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """(--params-file paths, {name: value} of -p/--param name:=value) in the --ros-args part of `argv`; values are
    YAML, as rcl reads them."""
    files, values = [], {}
    if "--ros-args" not in argv:
        return files, values
    rest = argv[argv.index("--ros-args") + 1:]
    for flag, arg in zip(rest, rest[1:]):
        if flag == "--params-file":
            files.append(arg)
        elif flag in ("-p", "--param"):
            name, sep, raw = arg.partition(":=")
            if not sep:
                raise ValueError(f"{flag} {arg}: expected name:=value")
            values[name] = yaml.safe_load(raw)
    return files, values


def check_cli(node: str, argv: list[str]) -> dict[str, Any]:
    """A node run directly: every --params-file is checked by the strict loader (an unknown node, key or type is one
    error line) and every -p name must be a parameter of `node`; returns the -p values, typed, for the node's
    `parameter_overrides`, so that they win over a file (rclpy files a `-p` under '/**', which the file's own node
    section beats)."""
    files, values = cli_parameters(argv)
    for path in files:
        resolve(read_param_file(path), str(path))
    hints = get_type_hints(NODE_PARAMS[node])
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"-p {', '.join(unknown)}: not a parameter of the {node} node; known: {sorted(hints)}")
    return {k: parse_value(hints[k], v, f"-p {k}") for k, v in values.items()}


def declare(node, cls: type):
    """Declare `cls`'s fields as ROS parameters of `node` (typed defaults) and return their current values, checked
    like a robot config's (a value outside a Literal field's choices is one error line)."""
    default = cls()
    values = {f.name: node.declare_parameter(f.name, getattr(default, f.name)).value for f in dataclasses.fields(cls)}
    return config_from_dict(cls, values, "ROS parameters")
