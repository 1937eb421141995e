"""The ManiSkill .h5/.json importer round-trips a trajectory file written here in ManiSkill's layout."""

import json

import h5py
import numpy as np
import pytest

from cotrain.data import DatasetError, EpisodeStore, FeatureSpec
from cotrain.data.maniskill_import import import_maniskill
from cotrain.data.rotations import quat_to_rpy, rpy_to_quat

SPEC = FeatureSpec()


def write_trajectories(path, lengths, control_mode="pd_ee_delta_pose", image_size=128):
    rng = np.random.default_rng(0)
    truth = []
    with h5py.File(path, "w") as f:
        for i, T in enumerate(lengths):
            g = f.create_group(f"traj_{i}")
            xyz = rng.uniform(-0.3, 0.3, (T + 1, 3))
            rpy = rng.uniform(-1.0, 1.0, (T + 1, 3))
            quat = rpy_to_quat(rpy)  # wxyz
            fingers = rng.uniform(0, 0.04, (T + 1, 2))
            qpos = np.concatenate([rng.uniform(-1, 1, (T + 1, 7)), fingers], 1)
            yy, xx = np.mgrid[0:image_size, 0:image_size]
            rgb = np.stack([np.stack([(xx + 3 * t) % 256, yy % 256, np.full_like(xx, 20 * i)], -1) for t in range(T + 1)])
            g.create_dataset("obs/sensor_data/base_camera/rgb", data=rgb.astype(np.uint8))
            g.create_dataset("obs/extra/tcp_pose", data=np.concatenate([xyz, quat], 1).astype(np.float32))
            g.create_dataset("obs/agent/qpos", data=qpos.astype(np.float32))
            actions = rng.uniform(-1, 1, (T, 7)).astype(np.float32)
            g.create_dataset("actions", data=actions)
            g.create_dataset("terminated", data=np.zeros(T, bool))
            g.create_dataset("truncated", data=np.zeros(T, bool))
            truth.append(dict(xyz=xyz[:T], rpy=rpy[:T], fingers=fingers[:T], actions=actions, rgb=rgb[:T]))
    episodes = [
        dict(episode_id=i, episode_seed=100 + i, control_mode=control_mode, elapsed_steps=T, success=True)
        for i, T in enumerate(lengths)
    ]
    path.with_suffix(".json").write_text(json.dumps({"env_info": {"env_id": "PickCube-v1"}, "episodes": episodes}))
    return truth


def test_import_roundtrip(tmp_path):
    truth = write_trajectories(tmp_path / "t.h5", [6, 4])
    n = import_maniskill(tmp_path / "t.h5", tmp_path / "out", SPEC, task="pick up the cube")
    assert n == 2
    store = EpisodeStore.load(tmp_path / "out", SPEC)
    assert len(store) == 10 and store.num_episodes == 2
    want_state = np.concatenate([np.concatenate([t["xyz"], t["rpy"], t["fingers"]], 1) for t in truth])
    np.testing.assert_allclose(store.state, want_state, atol=1e-5)
    np.testing.assert_array_equal(store.action, np.concatenate([t["actions"] for t in truth]))
    assert set(store.task) == {"pick up the cube"}
    assert store.provenance[1].seed == 101 and store.provenance[1].domain == "sim"
    rgb = np.concatenate([t["rgb"] for t in truth]).astype(int)
    assert np.abs(store.images.astype(int) - rgb).mean() < 3.0


def test_import_resizes_other_camera_sizes(tmp_path):
    write_trajectories(tmp_path / "t.h5", [3], image_size=64)
    import_maniskill(tmp_path / "t.h5", tmp_path / "out", SPEC, task="x")
    assert EpisodeStore.load(tmp_path / "out", SPEC).images.shape == (3, 128, 128, 3)


def test_import_refuses_joint_control_and_missing_task(tmp_path):
    write_trajectories(tmp_path / "t.h5", [3], control_mode="pd_joint_pos")
    with pytest.raises(DatasetError, match=r"t.json: episode 0 control_mode='pd_joint_pos'"):
        import_maniskill(tmp_path / "t.h5", tmp_path / "out", SPEC, task="x")
    write_trajectories(tmp_path / "u.h5", [3])
    with pytest.raises(DatasetError, match="has no instruction"):
        import_maniskill(tmp_path / "u.h5", tmp_path / "out", SPEC)
    assert not (tmp_path / "out").exists()


def test_import_missing_obs_key_names_it(tmp_path):
    write_trajectories(tmp_path / "t.h5", [3])
    with h5py.File(tmp_path / "t.h5", "a") as f:
        del f["traj_0/obs/extra/tcp_pose"]
    with pytest.raises(DatasetError, match=r"traj_0: missing '/traj_0/obs/extra/tcp_pose'"):
        import_maniskill(tmp_path / "t.h5", tmp_path / "out", SPEC, task="x")


def test_rpy_convention_by_hand():
    # 90° yaw: x axis turns into y; quaternion (cos 45°, 0, 0, sin 45°)
    np.testing.assert_allclose(rpy_to_quat([0, 0, np.pi / 2]), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(quat_to_rpy([0, 1, 0, 0]), [np.pi, 0, 0], atol=1e-12)  # 180° about x
    rpy = np.random.default_rng(1).uniform([-3, -1.5, -3], [3, 1.5, 3], (50, 3))
    np.testing.assert_allclose(quat_to_rpy(rpy_to_quat(rpy)), rpy, atol=1e-9)
    # against the rotation matrix R = Rz(yaw) Ry(pitch) Rx(roll) applied to a vector
    r, p, y = 0.3, -0.4, 1.1
    Rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    Ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    Rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    w, x, yq, z = rpy_to_quat([r, p, y])
    R_q = np.array([
        [1 - 2 * (yq * yq + z * z), 2 * (x * yq - z * w), 2 * (x * z + yq * w)],
        [2 * (x * yq + z * w), 1 - 2 * (x * x + z * z), 2 * (yq * z - x * w)],
        [2 * (x * z - yq * w), 2 * (yq * z + x * w), 1 - 2 * (x * x + yq * yq)],
    ])
    np.testing.assert_allclose(R_q, Rz @ Ry @ Rx, atol=1e-12)
