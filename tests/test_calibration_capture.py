"""Capturing what `cotrain.calibrate` reads on the robot: the scripted calibration motion (by hand), the background
frames written all at once, and the recorder's capture service on loopback ROS."""

import numpy as np
import pytest

from cotrain.calibration.background_frames import save_frames
from robot_bridge.calibration_capture import calibration_motion


def test_motion_varies_and_returns_to_its_start():
    m = calibration_motion(steps=20, amplitude=0.01, seed=3)
    assert m.shape == (20, 7) and m.dtype == np.float32
    np.testing.assert_allclose(m[:, :3].sum(axis=0), 0.0, atol=1e-7)  # back where it started
    np.testing.assert_array_equal(m[10:, :3], -m[:10, :3][::-1])  # the first half undone, in reverse
    assert np.all(np.abs(m[:, :3]).sum(axis=1) == pytest.approx(0.01))  # one axis at a time, 1 cm
    assert np.all(m[:, 3:6] == 0) and np.all(m[:, 6] == 1.0)
    assert len({tuple(r) for r in m[:, :3]}) > 2  # the command varies: a latency is identifiable
    with pytest.raises(ValueError, match="steps=5 must be even"):
        calibration_motion(5, 0.01, 0)


def test_background_frames_are_what_calibrate_reads(tmp_path):
    from cotrain.calibrate import read_frames

    frames = [np.full((6, 8, 3), k, np.uint8) for k in range(3)]
    save_frames(frames, tmp_path / "bg")
    np.testing.assert_array_equal(read_frames(tmp_path / "bg"), np.stack(frames))
    save_frames(frames[:1], tmp_path / "bg")  # a new capture replaces the old one entirely
    assert len(read_frames(tmp_path / "bg")) == 1


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_recorder_captures_the_background_on_request(tmp_path):
    pytest.importorskip("rclpy")
    import os

    from cotrain.calibrate import read_frames
    from robot_bridge.graph import make_node, node_specs
    from doubles.sandbox import isolated_ros_env
    from doubles.bridge import RosHarness

    env = isolated_ros_env()
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})
    (spec,) = [s for s in node_specs("calibrate", "franka_sim", {"recorder": {
        "dataset_root": str(tmp_path / "calib"), "background_dir": str(tmp_path / "bg"), "background_frames": 4,
        "task": "calibrate"}}) if s.name == "recorder"]
    with RosHarness() as h:
        recorder = h.add(make_node(spec, context=h.context))
        h.start_camera(rate_hz=30.0)
        assert h.call("/recorder/capture_background").success
        h.wait_for(lambda: h.status.get("recorder", {}).get("backgrounds") == 1, 20.0, "the background capture")
        h.stop_camera()
    frames = read_frames(tmp_path / "bg")
    assert frames.shape == (4, 128, 128, 3) and (frames == h.image).all()
    assert recorder.p.background_frames == 4
