"""Recorder: frame pairing by hand, and two saved episodes (one with each action arriving before its image) surviving
a SIGKILL during the third (loopback ROS)."""

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
    [f] = s.add_action(100 * MS, np.arange(7))  # a policy action stamped with the image it answers
    assert f.image[0, 0, 0] == 1 and f.state[0] == np.float32(0.9) and f.action.dtype == np.float32
    assert s.add_action(140 * MS, np.arange(7), operator=True) == []  # teleop: a newer image may still come
    assert s.add_image(166 * MS, np.full((2, 2, 3), 3, np.uint8)) == []  # it did not, but a state before 133 ms may
    [f] = s.add_state(150 * MS, np.full(8, 1.5, np.float32))  # the image at or before 140 ms, the state before it
    assert f.image[0, 0, 0] == 2 and f.state[0] == np.float32(1.05) and f.operator
    assert s.skipped == 0 and s.pending == 0


def test_an_action_that_arrives_before_its_observation_waits_for_it():
    s = FrameSync(max_skew_ns=100 * MS)
    s.add_state(98 * MS, np.full(8, 0.98, np.float32))
    s.add_image(100 * MS, np.full((2, 2, 3), 1, np.uint8))
    assert s.add_action(133 * MS, np.full(7, 0.133)) == []  # its image (133 ms) is still in transit
    assert s.add_action(166 * MS, np.full(7, 0.166)) == []  # queued behind it: frames keep the sent order
    assert s.add_image(133 * MS, np.full((2, 2, 3), 2, np.uint8)) == []  # the state read before it is in transit too
    assert s.pending == 2
    s.add_state(131 * MS, np.full(8, 1.31, np.float32))
    [f] = s.add_state(151 * MS, np.full(8, 1.51, np.float32))  # a state after the image: 131 ms was the one
    assert f.image[0, 0, 0] == 2 and f.state[0] == np.float32(1.31) and f.action[0] == np.float32(0.133)
    assert s.pending == 1
    [f] = s.flush()  # the episode ends before the 166 ms image: the newest one at or before it, 33 ms old
    assert f.image[0, 0, 0] == 2 and f.state[0] == np.float32(1.31) and f.action[0] == np.float32(0.166)
    assert s.skipped == 0


def test_later_actions_do_not_time_out_an_action_waiting_for_its_image():
    s = FrameSync(max_skew_ns=100 * MS)
    s.add_state(98 * MS, np.full(8, 0.98, np.float32))
    s.add_image(100 * MS, np.full((2, 2, 3), 1, np.uint8))
    assert s.add_action(133 * MS, np.full(7, 0.133)) == []
    assert s.add_action(250 * MS, np.full(7, 0.25)) == []  # 117 ms later: the 133 ms image may still be in transit
    s.add_state(131 * MS, np.full(8, 1.31, np.float32))
    assert s.add_image(133 * MS, np.full((2, 2, 3), 2, np.uint8)) == []
    [f] = s.add_state(140 * MS, np.full(8, 1.4, np.float32))
    assert f.image[0, 0, 0] == 2 and f.action[0] == np.float32(0.133) and s.pending == 1 and s.skipped == 0


def test_skips_holds_and_stale_observations():
    s = FrameSync(max_skew_ns=100 * MS)
    s.add_state(0 * MS + 1, np.zeros(8, np.float32))
    s.add_image(10 * MS, np.zeros((2, 2, 3), np.uint8))
    assert s.add_action(5 * MS, np.zeros(7)) == []  # no image at or before it, and a later one is there: skipped
    assert s.add_action(0, np.zeros(7)) == []  # a watchdog hold carries no observation: skipped
    assert s.add_action(200 * MS, np.zeros(7)) == []  # waits for an image at or after 200 ms
    assert s.skipped == 2 and s.pending == 1
    assert s.add_state(301 * MS, np.zeros(8, np.float32)) == []  # the stream moved 101 ms past the last action
    assert s.skipped == 3 and s.pending == 0  # image 190 ms older than the action: beyond the 100 ms skew
    s.add_action(400 * MS, np.zeros(7))
    s.clear()  # a discarded episode: its waiting actions are dropped uncounted
    assert s.flush() == [] and s.skipped == 3


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

    def publish_frame(k: int, action_first: bool) -> None:
        now = h.probe.get_clock().now().nanoseconds
        action = np.array([0.001 * k, 0, 0, 0, 0, 0, 1.0 if k % 2 else -1.0])
        if action_first:  # the action reaches the recorder before the observation it answers (a loaded machine)
            applied_pub.publish(messages.action_to_msg(action, now))
            time.sleep(0.03)
        xyz = np.array([0.5 + 0.001 * k, 0.0, 0.3])
        pose_pub.publish(messages.pose_msg(xyz, [1.0, 0, 0, 0], now - 2 * MS))
        joint_pub.publish(messages.joint_state_msg(np.zeros(7), np.full(2, 0.02), now - 2 * MS))
        image = np.full((128, 128, 3), k % 256, np.uint8)
        h.image_pub.publish(messages.image_to_msg(image, now, "camera"))
        if not action_first:
            time.sleep(0.03)
            applied_pub.publish(messages.action_to_msg(action, now))
        sent.append(action)
        time.sleep(0.05)

    def record(n: int, first: int, action_first: bool = False) -> None:
        assert h.call("/recorder/start", timeout=60).success
        for k in range(first, first + n):
            publish_frame(k, action_first)

        def all_arrived() -> bool:  # the last action waits for a state read after its image (or the episode's end)
            st = h.status.get("recorder", {})
            return st.get("frames", 0) + st.get("waiting", 0) == n

        h.wait_for(all_arrived, 10, f"{n} buffered or waiting frames")

    try:
        try:
            h.wait_for(lambda: "recorder" in h.status, 180, "the recorder process")
        except TimeoutError:
            proc.kill()
            raise AssertionError(proc.communicate()[0].decode()[-3000:]) from None
        for ep in range(2):
            record(6, first=10 * ep, action_first=ep == 1)
            r = h.call("/recorder/stop", timeout=120)
            assert r.success and "(6 frames)" in r.message and "dropped" not in r.message, r.message
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
    for i, k in enumerate([*range(6), *range(10, 16)]):  # every frame holds the image and state its action answered
        frame = ds[i]
        assert frame["observation.images.main"].shape == (128, 128, 3)
        assert int(frame["observation.images.main"][0, 0, 0]) == k, f"frame {i}"
        np.testing.assert_allclose(np.asarray(frame["observation.state"][:3]), [0.5 + 0.001 * k, 0.0, 0.3], atol=1e-6)
        np.testing.assert_allclose(np.asarray(frame["action"][0]), sent[i], atol=1e-6)
    first = ds[0]
    assert first["task"] == "pick up the red cube"
    prov = read_provenance(root)
    assert sorted(prov) == [0, 1] and all(p.domain == "real" and p.source == "teleop" for p in prov.values())
    batch = next(iter(RealBatchStream(ds, batch_size=4, seed=0)))
    assert batch["action"].shape == (4, 4, 7)
