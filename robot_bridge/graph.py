"""The one node list that `python -m robot_bridge.deploy` and the launch files both start.

A profile names the nodes and the recorder's provenance source (what the recorded actions came from); a robot config
(ROS 2 parameter file, `configs/robot/*.yaml`) gives the other parameters.
With the twin backend the simulated world publishes the camera itself, so no camera node is started.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_bridge.backends import backend_kind
from robot_bridge.params import RecorderSource, load_robot_config

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs" / "robot"

@dataclass(frozen=True)
class NodeKind:
    module: str
    """Python module whose `main()` runs the node alone (`python -m <module>`)."""
    cls: str
    """The node class in that module (what `deploy` instantiates in one process)."""


NODES: dict[str, NodeKind] = {
    "camera": NodeKind("robot_bridge.nodes.camera_node", "CameraNode"),
    "franka": NodeKind("robot_bridge.nodes.franka_node", "FrankaNode"),
    "policy": NodeKind("robot_bridge.nodes.policy_node", "PolicyNode"),
    "teleop": NodeKind("robot_bridge.nodes.teleop_node", "TeleopNode"),
    "recorder": NodeKind("robot_bridge.nodes.recorder_node", "RecorderNode"),
    "calibration": NodeKind("robot_bridge.nodes.calibration_node", "CalibrationNode"),
}


@dataclass(frozen=True)
class Profile:
    nodes: tuple[str, ...]
    """The nodes it starts, in order (names in NODES)."""
    source: RecorderSource
    """The recorder's provenance `source` (an override may still say 'intervention'; in `intervene` an episode the
    operator corrected is saved as 'intervention')."""
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What the profile sets on its nodes (before the robot config's and the caller's overrides)."""


PROFILES: dict[str, Profile] = {
    "deploy_policy": Profile(("camera", "franka", "policy", "recorder"), "policy"),
    "teleop_collect": Profile(("camera", "franka", "teleop", "recorder"), "teleop"),
    # HG-DAgger: the policy drives, the operator takes over; frames flagged
    "intervene": Profile(("camera", "franka", "policy", "teleop", "recorder"), "policy",
                         {"teleop": {"intervene": True}, "recorder": {"intervention": True}}),
    "calibrate": Profile(("camera", "franka", "calibration", "recorder"), "expert"),
}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    """ROS node name (also its section in the robot config)."""
    module: str
    """Python module whose `main()` runs the node alone (`python -m <module>`)."""
    params: dict[str, Any]
    """Every parameter of the node, resolved and typed."""

    def command(self) -> list[str]:
        """The executable and arguments of a stand-alone process (what a launch_ros Node runs)."""
        return [sys.executable, "-m", self.module]


def robot_config_path(robot: str) -> Path:
    """`robot` is a name in configs/robot (without .yaml) or a path to a parameter file."""
    p = Path(robot)
    p = p if p.suffix in (".yaml", ".yml") else CONFIG_DIR / f"{robot}.yaml"
    if not p.is_file():
        names = sorted(c.stem for c in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"robot_config={robot!r}: {p} does not exist; valid names: {', '.join(names)} "
                                "(or a path to a .yaml parameter file)")
    return p


def node_specs(profile: str, robot: str, overrides: dict[str, dict[str, Any]] | None = None) -> list[NodeSpec]:
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r}: expected one of {sorted(PROFILES)}")
    overrides = dict(overrides or {})
    prof = PROFILES[profile]
    for node, values in prof.params.items():
        overrides[node] = values | overrides.get(node, {})
    overrides["recorder"] = {"source": prof.source} | overrides.get("recorder", {})
    params = load_robot_config(robot_config_path(robot), overrides)
    camera_in_arm = backend_kind(params["franka"]["backend"]).provides_camera
    names = [n for n in prof.nodes if not (n == "camera" and camera_in_arm)]
    return [NodeSpec(n, NODES[n].module, params[n]) for n in names]


def overrides_for(checkpoint: str, task: str, dataset: str, activate: bool, start: bool) -> dict[str, dict[str, Any]]:
    """Parameter overrides from the deploy/launch arguments (empty strings keep the robot config's values)."""
    o: dict[str, dict[str, Any]] = {"franka": {"autostart": bool(activate)}, "policy": {"autostart": bool(start)}}
    if checkpoint:
        o["policy"]["checkpoint"] = checkpoint
    if task:
        o["policy"]["task"] = task
        o["recorder"] = {"task": task}
    if dataset:
        o.setdefault("recorder", {})["dataset_root"] = dataset
    return o


def ros_parameters(params: dict[str, Any]):
    """rclpy Parameters for `parameter_overrides` (in-process nodes)."""
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in params.items()]


def make_node(spec: NodeSpec, context=None):
    """Instantiate the node in this process with its parameters."""
    cls = getattr(importlib.import_module(spec.module), NODES[spec.name].cls)
    return cls(context=context, parameter_overrides=ros_parameters(spec.params))
