"""Camera, teleop and policy nodes in one process on loopback ROS (no arm): wiring, checkpoint checks, preprocessing."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from cotrain.data.spec import IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec, SpecMismatchError  # noqa: E402
from robot_bridge import messages, topics  # noqa: E402
from robot_bridge.graph import ros_parameters  # noqa: E402
from robot_bridge.image import to_spec_image  # noqa: E402
from doubles.bridge import RosHarness, load_scripted_policy, write_scripted_checkpoint  # noqa: E402
from doubles.sandbox import isolated_ros_env  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


@pytest.fixture
def h(monkeypatch):
    env = isolated_ros_env()
    for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID"):
        monkeypatch.setenv(k, env[k])
    harness = RosHarness()
    yield harness
    harness.close()


def test_camera_node_publishes_file_frames_at_spec_size(h, tmp_path):
    from sensor_msgs.msg import Image

    from robot_bridge.nodes.camera_node import CameraNode

    video = tmp_path / "cam.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for k in range(5):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 2] = 200  # BGR red
        w.write(frame)
    w.release()
    got = []
    h.probe.create_subscription(Image, topics.IMAGE, lambda m: got.append(messages.msg_to_image(m)), 10)
    cam = h.add(CameraNode(context=h.context, parameter_overrides=ros_parameters({"device": str(video), "rate_hz": 30.0})))
    h.wait_for(lambda: len(got) >= 8, 30, lambda: f"camera frames (the 5-frame file loops; the node published "
                                                 f"{cam.published}, failed {cam.failures} reads, {len(got)} arrived)")
    img = got[-1]
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert img[..., 0].mean() > 150 and img[..., 2].mean() < 50  # published as RGB


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("stop", ["executor", "context"])
def test_spin_bounded_takes_in_late_nodes_and_ends_quietly_on_shutdown(monkeypatch, threads, stop):
    """A node added while the executor spins gets its timer run; shutting down the executor or the context ends the
    spinning thread within a few waits and without an exception in it."""
    import threading

    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.node import Node

    from robot_bridge.nodes import spin_bounded

    env = isolated_ros_env()
    for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID"):
        monkeypatch.setenv(k, env[k])
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = (SingleThreadedExecutor(context=context) if threads == 1
                else MultiThreadedExecutor(num_threads=threads, context=context))
    thread = threading.Thread(target=spin_bounded, args=(executor, 0.05), daemon=True)
    thread.start()
    try:
        node = Node("late", context=context)
        ticks = []
        node.create_timer(0.01, lambda: ticks.append(1))
        executor.add_node(node)
        deadline = time.monotonic() + 5.0
        while len(ticks) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(ticks) >= 3, "a node added while spinning never had its timer run"
        if stop == "executor":
            executor.shutdown(timeout_sec=1.0)
        else:
            context.shutdown()
        thread.join(timeout=2.0)
        assert not thread.is_alive(), f"spin_bounded kept spinning after the {stop} shut down"
        assert errors == []
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_teleop_keys_become_actions(h):
    from robot_bridge.nodes.teleop_node import KEYS_TOPIC, TeleopNode
    from std_msgs.msg import String

    h.add(TeleopNode(context=h.context, parameter_overrides=ros_parameters({"input": "none", "linear_speed": 0.05})))
    keys = h.probe.create_publisher(String, KEYS_TOPIC, 10)
    h.wait_for(lambda: len(h.actions) >= 2, 10, "teleop actions")
    assert np.allclose(h.actions[-1].value, [0, 0, 0, 0, 0, 0, 1.0])  # idle: no motion, gripper open
    n = len(h.actions)
    keys.publish(String(data="w "))  # +x and toggle the gripper
    h.wait_for(lambda: any(r.value[0] > 0 for r in h.actions[n:]), 5, "a +x action")
    a = next(r.value for r in h.actions[n:] if r.value[0] > 0)
    np.testing.assert_allclose(a, [0.005, 0, 0, 0, 0, 0, -1.0])  # 0.05 m/s / 10 Hz


def _policy_node(h, ckpt, **kw):
    from robot_bridge.nodes.policy_node import PolicyNode

    params = {"checkpoint": str(ckpt), "task": "open the drawer"} | kw
    return h.add(PolicyNode(load=load_scripted_policy, context=h.context, parameter_overrides=ros_parameters(params)))


def test_policy_node_refuses_a_checkpoint_with_another_spec(h, tmp_path):
    bad = write_scripted_checkpoint(tmp_path / "bad.json", FeatureSpec(image_height=96, image_width=96), [0] * 7)
    with pytest.raises(SpecMismatchError, match="image_height: expected 128, got 96"):
        _policy_node(h, bad)


def test_policy_node_refuses_prefetch_it_cannot_honour(h, tmp_path):
    ckpt = write_scripted_checkpoint(tmp_path / "p.json", FeatureSpec(), [0] * 7, chunk_size=4)
    with pytest.raises(ValueError, match="prefetch_ticks=1 needs pace=clock"):  # the twin: the env waits for each command
        _policy_node(h, ckpt, pace="frames", prefetch_ticks=1)
    with pytest.raises(ValueError, match="chunk 4 is shorter than n_action_steps=0 or than prefetch_ticks=5"):
        _policy_node(h, ckpt, prefetch_ticks=5)


def test_reload_keeps_the_running_policy_when_the_new_one_mismatches(h, tmp_path):
    from rclpy.parameter import Parameter

    good = write_scripted_checkpoint(tmp_path / "good.json", FeatureSpec(), [0.001] + [0] * 6)
    other = write_scripted_checkpoint(tmp_path / "other.json", FeatureSpec(), [0.002] + [0] * 6)
    bad = write_scripted_checkpoint(tmp_path / "bad.json", FeatureSpec(fps=30), [0] * 7)
    node = _policy_node(h, good)
    first = node.policy
    node.set_parameters([Parameter("checkpoint", value=str(bad))])
    r = h.call("/policy/reload")
    assert not r.success and "fps: expected 10, got 30" in r.message and node.policy is first
    node.set_parameters([Parameter("checkpoint", value=str(other))])
    assert h.call("/policy/reload").success and float(node.policy.action[0]) == pytest.approx(0.002)


def test_policy_sees_the_training_observation(h, tmp_path):
    """A 256x256 camera frame reaches the policy as the spec's 128x128 image (same resize as the camera node and
    the recorder), the state as xyz + rpy + fingers, the task as a one-element list; the action echoes the stamp."""
    node = _policy_node(h, write_scripted_checkpoint(tmp_path / "p.json", FeatureSpec(), [0.001] + [0] * 6))
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState

    pose_pub = h.probe.create_publisher(PoseStamped, topics.EE_POSE, 10)
    joint_pub = h.probe.create_publisher(JointState, topics.JOINT_STATES, 10)
    big = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    assert h.call("/policy/start").success
    stamp = 0
    for _ in range(20):
        now = h.probe.get_clock().now().nanoseconds
        pose_pub.publish(messages.pose_msg([0.5, 0.1, 0.3], [1.0, 0, 0, 0], now))
        joint_pub.publish(messages.joint_state_msg(np.zeros(7), [0.02, 0.02], now))
        time.sleep(0.02)
        stamp = h.probe.get_clock().now().nanoseconds
        h.image_pub.publish(messages.image_to_msg(big, stamp, "camera"))
        time.sleep(0.1)
        if node.policy.seen:
            break
    h.wait_for(lambda: any(r.stamp_ns > 0 for r in h.actions), 5, "an action answering a frame")
    obs = node.policy.seen[0]
    np.testing.assert_array_equal(obs[IMAGE_KEY][0], to_spec_image(big, 128, 128))
    np.testing.assert_allclose(obs[STATE_KEY][0], [0.5, 0.1, 0.3, np.pi, 0, 0, 0.02, 0.02], atol=1e-6)
    assert obs[TASK_KEY] == ["open the drawer"] and obs[STATE_KEY].dtype == np.float32
    _, action, action_stamp, _ = next(r for r in h.actions if r.stamp_ns > 0)  # (holds before the first frame: 0)
    np.testing.assert_allclose(action, [0.001, 0, 0, 0, 0, 0, 0])
    assert action_stamp == messages.stamp_to_ns(messages.ns_to_stamp(action_stamp)) and action_stamp <= stamp


def test_the_arm_and_camera_nodes_start_without_torch():
    """The franka and camera nodes do not import torch (the policy and the dataset writer do): they load in 0.3 s
    instead of 2 s, and a garbage collection in the franka node does not walk torch's ~150k objects (cotrain.data
    loads its names on first use)."""
    import subprocess
    import sys

    code = ("import sys; import robot_bridge.nodes.franka_node, robot_bridge.nodes.camera_node; print(sorted(m for m in ('torch', 'lerobot') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
