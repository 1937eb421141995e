"""The launch files and `python -m robot_bridge.deploy` start the same nodes with the same parameters.

ROS's `launch` / `launch_ros` cannot be installed here, so they are stubbed in sys.modules with classes that record
what the launch file builds; the deploy side runs for real (Hydra, subprocess) with `print_nodes=true`.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest

from robot_bridge.graph import CONFIG_DIR, PROFILES, node_specs
from robot_bridge.params import NODE_PARAMS, load_robot_config

REPO = Path(__file__).resolve().parent.parent


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


@pytest.fixture
def stub_launch(monkeypatch):
    mods = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
    }
    mods["launch"].LaunchDescription = type("LaunchDescription", (_Recorded,), {})
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorded,), {})
    mods["launch.actions"].OpaqueFunction = type("OpaqueFunction", (_Recorded,), {})
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (_Recorded,), {})
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods


def launched_nodes(profile: str, overrides: dict[str, str]) -> list[dict]:
    """Run launch/<profile>.launch.py against the stubs, as `ros2 launch ... k:=v` would."""
    ld = runpy.run_path(str(REPO / "launch" / f"{profile}.launch.py"))["generate_launch_description"]()
    entities = ld.args[0]
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    unknown = set(overrides) - set(declared)
    assert not unknown, f"launch arguments {unknown} are not declared"
    context = types.SimpleNamespace(launch_configurations=declared | overrides)
    nodes = opaque.kwargs["function"](context)
    out = []
    for n in nodes:
        assert type(n).__name__ == "Node" and "package" not in n.kwargs  # runs `python -m module`, no ament package
        (params,) = n.kwargs["parameters"]
        out.append({"name": n.kwargs["name"], "command": [n.kwargs["executable"], *n.kwargs["arguments"]], "params": params})
    return out


def deployed_nodes(args: list[str]) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "robot_bridge.deploy", "print_nodes=true", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    specs = json.loads(out.stdout)
    return [{"name": s["name"], "command": [sys.executable, "-m", s["module"]], "params": s["params"]} for s in specs]


@pytest.mark.parametrize(
    "profile,launch_args,deploy_args",
    [
        ("deploy_policy", {"robot_config": "franka_sim", "checkpoint": "runs/ckpt", "instruction": "push the red cube"},
         ["robot_config=franka_sim", "checkpoint=runs/ckpt", "instruction=push the red cube"]),
        ("teleop_collect", {"robot_config": "franka", "dataset": "datasets/real/pick", "activate": "false"},
         ["profile=teleop_collect", "robot_config=franka", "dataset=datasets/real/pick", "activate=false"]),
        ("intervene", {"robot_config": "franka_sim", "checkpoint": "runs/ckpt", "dataset": "datasets/real/dagger"},
         ["profile=intervene", "robot_config=franka_sim", "checkpoint=runs/ckpt", "dataset=datasets/real/dagger"]),
    ],
)
def test_launch_file_and_deploy_describe_the_same_nodes(stub_launch, profile, launch_args, deploy_args):
    launched = launched_nodes(profile, launch_args)
    deployed = deployed_nodes(deploy_args)
    assert [n["name"] for n in launched] == list(PROFILES[profile].nodes)
    assert launched == deployed
    by_name = {n["name"]: n["params"] for n in launched}
    if profile == "deploy_policy":
        assert by_name["policy"]["checkpoint"] == "runs/ckpt" and by_name["recorder"]["task"] == "push the red cube"
        assert by_name["franka"]["autostart"] is True and by_name["franka"]["robot_ip"] == "127.0.0.2"
    elif profile == "intervene":  # the operator's steps go to /teleop/action; frames flagged, rollouts by default
        assert by_name["teleop"]["intervene"] is True and by_name["recorder"]["intervention"] is True
        assert by_name["recorder"]["source"] == "policy" and by_name["policy"]["checkpoint"] == "runs/ckpt"
    else:
        assert by_name["recorder"]["dataset_root"] == "datasets/real/pick" and by_name["franka"]["autostart"] is False


def test_twin_profile_has_no_camera_node():
    """The twin is its own camera: the deploy profile's nodes (PROFILES, the one list) without the camera node."""
    assert "camera" in PROFILES["deploy_policy"].nodes
    assert [s.name for s in node_specs("deploy_policy", "twin")] == [n for n in PROFILES["deploy_policy"].nodes if n != "camera"]


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_robot_configs_are_valid_ros_parameter_files(path):
    """rcl's own parser reads each file, and every node declares the values our strict loader resolves."""
    rclpy = pytest.importorskip("rclpy")
    from robot_bridge.params import declare

    resolved = load_robot_config(path)
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(path)])
    try:
        for name, cls in NODE_PARAMS.items():
            node = rclpy.create_node(name, context=context)
            assert vars(declare(node, cls)) == resolved[name], name
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_bad_robot_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("franka:\n  ros__parameters:\n    max_translation: fast\n")
    with pytest.raises(ValueError, match=r"bad.yaml: franka.max_translation: expected float, got 'fast'"):
        load_robot_config(bad)
    bad.write_text("frank:\n  ros__parameters: {}\n")
    with pytest.raises(ValueError, match=r"unknown node section\(s\) \['frank'\]"):
        load_robot_config(bad)
