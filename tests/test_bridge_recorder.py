"""Recorder: frame pairing by hand, and two saved episodes surviving a SIGKILL during the third (loopback ROS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from robot_bridge.frame_sync import FrameSync

MS = 1_000_000


def test_pairs_action_with_its_image_and_the_state_before_it():
    s = FrameSync(max_skew_ns=100 * MS)
    s.add_state(90 * MS, np.full(8, 0.9, np.float32))
    s.add_image(100 * MS, np.full((2, 2, 3), 1, np.uint8))
    s.add_state(105 * MS, np.full(8, 1.05, np.float32))  # after the image: not what the policy saw
    s.add_image(133 * MS, np.full((2, 2, 3), 2, np.uint8))
    f = s.pair(100 * MS, np.arange(7))  # a policy action stamped with the image it answers
    assert f.image[0, 0, 0] == 1 and f.state[0] == np.float32(0.9) and f.action.dtype == np.float32
    f = s.pair(140 * MS, np.arange(7))  # a teleop action: newest image at or before it, state before that image
    assert f.image[0, 0, 0] == 2 and f.state[0] == np.float32(1.05)


def test_skips_holds_and_stale_observations():
    s = FrameSync(max_skew_ns=100 * MS)
    s.add_state(0 * MS + 1, np.zeros(8, np.float32))
    s.add_image(10 * MS, np.zeros((2, 2, 3), np.uint8))
    assert s.pair(0, np.zeros(7)) is None  # a watchdog hold carries no observation
    assert s.pair(200 * MS, np.zeros(7)) is None  # image 190 ms older than the action: beyond the 100 ms skew
    assert s.pair(5 * MS, np.zeros(7)) is None  # no image at or before the action
    assert s.skipped == 3


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_episodes_survive_a_kill_during_the_third(tmp_path):
    pytest.importorskip("rclpy")
    from cotrain.data import load_dataset, read_provenance
    from cotrain.data.spec import FeatureSpec
    from cotrain.rl.anchor import RealBatchStream
    from robot_bridge import messages, topics
    from doubles.sandbox import isolated_ros_env, remove_dead_shm_segments, shm_segments
    from doubles.bridge import RosHarness

    env = isolated_ros_env()
    shm_before = shm_segments()
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})
    root = tmp_path / "datasets" / "real" / "kill_test"
    params = {"dataset_root": str(root), "task": "pick up the red cube", "source": "teleop", "domain": "real",
              "use_video": "false"}
    ros_args = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
    proc = subprocess.Popen([sys.executable, "-m", "robot_bridge.nodes.recorder_node", "--ros-args", *ros_args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    h = RosHarness()
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState

    pose_pub = h.probe.create_publisher(PoseStamped, topics.EE_POSE, 10)
    joint_pub = h.probe.create_publisher(JointState, topics.JOINT_STATES, 10)
    applied_pub = h.probe.create_publisher(JointState, topics.APPLIED_ACTION, 10)
    sent: list[np.ndarray] = []

    def publish_frame(k: int) -> None:
        now = h.probe.get_clock().now().nanoseconds
        xyz = np.array([0.5 + 0.001 * k, 0.0, 0.3])
        pose_pub.publish(messages.pose_msg(xyz, [1.0, 0, 0, 0], now - 2 * MS))
        joint_pub.publish(messages.joint_state_msg(np.zeros(7), np.full(2, 0.02), now - 2 * MS))
        image = np.full((128, 128, 3), k % 256, np.uint8)
        h.image_pub.publish(messages.image_to_msg(image, now, "camera"))
        time.sleep(0.03)  # the recorder sees the observation before the action that answers it
        action = np.array([0.001 * k, 0, 0, 0, 0, 0, 1.0 if k % 2 else -1.0])
        applied_pub.publish(messages.action_to_msg(action, now))
        sent.append(action)
        time.sleep(0.05)

    def record(n: int, first: int) -> None:
        assert h.call("/recorder/start", timeout=60).success
        for k in range(first, first + n):
            publish_frame(k)
        h.wait_for(lambda: h.status.get("recorder", {}).get("frames") == n, 10, f"{n} buffered frames")

    try:
        try:
            h.wait_for(lambda: "recorder" in h.status, 180, "the recorder process")
        except TimeoutError:
            proc.kill()
            raise AssertionError(proc.communicate()[0].decode()[-3000:]) from None
        for ep in range(2):
            record(6, first=10 * ep)
            r = h.call("/recorder/stop", timeout=120)
            assert r.success, r.message
        record(4, first=20)
        os.kill(proc.pid, signal.SIGKILL)  # mid-episode: 4 frames buffered, never saved
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        h.close()
        remove_dead_shm_segments(keep=shm_before)  # the killed recorder's Fast DDS segments

    ds = load_dataset(root, FeatureSpec(), chunk_size=4)  # what Stage II's anchor reads, unconverted
    assert len(ds) == 12
    first, last = ds[0], ds[11]
    assert first["observation.images.main"].shape == (128, 128, 3) and int(first["observation.images.main"][0, 0, 0]) == 0
    np.testing.assert_allclose(np.asarray(first["action"][0]), sent[0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(last["action"][0]), sent[11], atol=1e-6)
    np.testing.assert_allclose(np.asarray(first["observation.state"][:3]), [0.5, 0.0, 0.3], atol=1e-6)
    assert first["task"] == "pick up the red cube"
    prov = read_provenance(root)
    assert sorted(prov) == [0, 1] and all(p.domain == "real" and p.source == "teleop" for p in prov.values())
    batch = next(iter(RealBatchStream(ds, batch_size=4, seed=0)))
    assert batch["action"].shape == (4, 4, 7)
