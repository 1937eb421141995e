"""The bridge's configuration errors and precedence without a running graph: command-line parameters of a node run
directly, robot config names, the recorder's provenance per profile, one-line errors from deploy and a node."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import get_args, get_type_hints

import pytest

from robot_bridge.backends import BACKENDS
from robot_bridge.graph import REPO, node_specs, robot_config_path
from robot_bridge.params import FrankaParams, PolicyParams, check_cli, cli_parameters, declare, load_robot_config


def test_cli_parameters_reads_files_and_yaml_values():
    argv = ["prog", "--ros-args", "--params-file", "a.yaml", "-p", "robot_ip:=127.0.0.5", "--param", "max_lead:=0.02",
            "-p", "workspace_min:=[0.3, -0.3, 0.05]"]
    files, values = cli_parameters(argv)
    assert files == ["a.yaml"]
    assert values == {"robot_ip": "127.0.0.5", "max_lead": 0.02, "workspace_min": [0.3, -0.3, 0.05]}
    assert cli_parameters(["prog", "-p", "x:=1"]) == ([], {})  # outside --ros-args: not ROS's


def test_check_cli_types_the_overrides_and_refuses_unknown_keys(tmp_path):
    good = tmp_path / "franka.yaml"
    good.write_text("franka:\n  ros__parameters:\n    robot_ip: 127.0.0.2\n")
    # an int for a float parameter is typed as the parameter's float (rclpy would refuse the int)
    assert check_cli("franka", ["p", "--ros-args", "--params-file", str(good), "-p", "max_lead:=1"]) == {"max_lead": 1.0}
    with pytest.raises(ValueError, match=r"-p robot_iq: not a parameter of the franka node"):
        check_cli("franka", ["p", "--ros-args", "-p", "robot_iq:=127.0.0.5"])
    typo = tmp_path / "typo.yaml"
    typo.write_text("franka:\n  ros__parameters:\n    max_translaton: 0.01\n")
    with pytest.raises(ValueError, match=r"typo.yaml: franka: unknown key\(s\) \['max_translaton'\] for FrankaParams"):
        check_cli("franka", ["p", "--ros-args", "--params-file", str(typo)])


def test_a_value_outside_a_literal_parameter_names_the_file_key_and_choices(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("franka:\n  ros__parameters:\n    backend: twim\n")
    with pytest.raises(ValueError) as e:
        load_robot_config(bad)
    assert str(e.value) == f"{bad}: franka.backend: 'twim' is not one of ['franky', 'twin']"
    assert get_args(get_type_hints(FrankaParams)["backend"]) == tuple(BACKENDS)  # the choices are the backends
    with pytest.raises(ValueError) as e:
        check_cli("policy", ["p", "--ros-args", "-p", "pace:=clok"])
    assert str(e.value) == "-p pace: 'clok' is not one of ['clock', 'frames']"

    class Node:  # what a node's ROS parameters hold after a launch file or rclpy set pace: clok
        def declare_parameter(self, name, default):
            return SimpleNamespace(value="clok" if name == "pace" else default)

    with pytest.raises(ValueError) as e:
        declare(Node(), PolicyParams)
    assert str(e.value) == "ROS parameters: pace: 'clok' is not one of ['clock', 'frames']"


def test_unknown_robot_config_lists_the_valid_names():
    with pytest.raises(FileNotFoundError, match=r"robot_config='franka_real'.*valid names: franka, franka_sim, twin"):
        robot_config_path("franka_real")


@pytest.mark.parametrize("profile,source", [("deploy_policy", "policy"), ("teleop_collect", "teleop")])
def test_recorder_source_comes_from_the_profile(profile, source):
    specs = {s.name: s.params for s in node_specs(profile, "franka_sim")}
    assert specs["recorder"]["source"] == source
    over = {s.name: s.params for s in node_specs(profile, "franka_sim", {"recorder": {"source": "intervention"}})}
    assert over["recorder"]["source"] == "intervention"


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_deploy_bad_robot_config_is_one_line():
    out = run_module("robot_bridge.deploy", "robot_config=franka_real")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"deploy: robot_config='franka_real': {REPO}/configs/robot/franka_real.yaml does not exist; valid names: "
        "franka, franka_sim, twin (or a path to a .yaml parameter file)"]


@pytest.mark.ros
def test_node_run_directly_missing_camera_is_one_line_with_a_video_hint():
    pytest.importorskip("rclpy")
    out = run_module("robot_bridge.nodes.camera_node", "--ros-args", "-p", "device:=/nonexistent/cam.mp4")
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("camera: camera.device='/nonexistent/cam.mp4': OpenCV cannot open it") and "video" in last
    assert "Traceback" not in out.stderr


@pytest.mark.ros
def test_deploy_missing_checkpoint_fails_before_the_arm_is_touched(tmp_path):
    """The arm node is built last: a missing checkpoint is one error line and the arm (127.0.0.2, nothing there)
    is never connected to."""
    pytest.importorskip("rclpy")
    import cv2
    import numpy as np

    video = tmp_path / "cam.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()
    out = run_module("robot_bridge.deploy", f"checkpoint={tmp_path / 'nope'}", f"+params.camera.device={video}",
                     f"dataset={tmp_path / 'ds'}")
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == f"deploy: checkpoint={tmp_path / 'nope'}: no such checkpoint or run directory"
    assert "franka" not in out.stderr and "Traceback" not in out.stderr
