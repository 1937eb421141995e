"""Twin backend end to end: a checkpoint deployed through ROS on the real-proxy env does what `cotrain.eval` does.

The same tiny checkpoint runs (a) `cotrain.evaluation.run_episode` and (b) `robot_bridge.deploy` (franka node with
the twin backend, policy node paced by frames, recorder) on the same seeds; the episodes must agree step for step:
success, length and return, every executed action, and the recorded observations (the policy's inputs).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("rclpy")

from cotrain.data import EpisodeStore, FeatureSpec, store_from_episodes  # noqa: E402
from cotrain.data.spec import IMAGE_KEY, STATE_KEY  # noqa: E402
from cotrain.policies import make_policy, policy_config_from_dict, save_checkpoint  # noqa: E402
from doubles.bridge import json_safe  # noqa: E402
from doubles.sandbox import isolated_ros_env  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.sapien, pytest.mark.timeout(600)]
SPEC = FeatureSpec()
TINY = {"type": "small_vla", "chunk_size": 4, "d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_ratio": 2,
        "cnn_channels": [8, 16], "value_hidden": 16, "head": {"type": "flow", "num_steps": 2, "n_layers": 1}}
SEED0, EPISODES, MAX_STEPS = 3, 2, 10  # 10 steps: two full chunks of 4 and a cut one (the end mid-chunk)


class RecordingEnv:
    """The eval env, recording each step's observation and action (what the recorder should store)."""

    def __init__(self, env) -> None:
        self.env, self.frames, self._obs = env, [], None

    @property
    def instructions(self):
        return self.env.instructions

    def reset(self, seed):
        self.frames.append([])
        self._obs, info = self.env.reset(seed=seed)
        return self._obs, info

    def step(self, action):
        self.frames[-1].append((self._obs[IMAGE_KEY][0].numpy().copy(), self._obs[STATE_KEY][0].numpy().copy(),
                                np.asarray(action[0], dtype=np.float32), self.env.instructions[0]))
        out = self.env.step(action)
        self._obs = out[0]
        return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from cotrain.envs import load_task_config

    root = tmp_path_factory.mktemp("twin")
    rng = np.random.default_rng(0)
    store = store_from_episodes([[{"image": np.zeros((128, 128, 3), np.uint8), "state": rng.standard_normal(8),
                                   "action": rng.uniform(-0.05, 0.05, 7), "task": "x"} for _ in range(4)]])
    # actions of a few cm / a few 0.01 rad: inside the env's per-axis clip, so eval and bridge see the same numbers
    stats = {"observation.state": {"mean": store.state.mean(0), "std": np.ones(8), "min": store.state.min(0),
                                   "max": store.state.max(0)},
             "action": {"mean": np.zeros(7), "std": 0.03 * np.ones(7), "min": -0.05 * np.ones(7), "max": 0.05 * np.ones(7)}}
    torch.manual_seed(0)
    policy = make_policy(policy_config_from_dict(dict(TINY)), SPEC, stats)
    save_checkpoint(root / "ckpt", policy)
    task = dataclasses.asdict(load_task_config("pick_place"))
    task.pop("source")
    task["max_episode_steps"] = MAX_STEPS
    (root / "task.yaml").write_text(yaml.safe_dump(json_safe(task)))
    return root


@pytest.fixture(scope="module")
def evaluated(setup):
    """(a) cotrain.eval's episodes on the seeds the bridge will use."""
    from cotrain.envs import load_task_config, make_task_env
    from cotrain.evaluation import run_episode
    from cotrain.policies.checkpoint import load_policy

    policy = load_policy(setup / "ckpt", expected_spec=SPEC).eval()
    env = RecordingEnv(make_task_env(load_task_config(setup / "task.yaml"), domain="real_proxy", obs_mode="rgb"))
    results = [run_episode(env, policy, SEED0 + k) for k in range(EPISODES)]
    env.env.close()
    return results, env.frames


@pytest.fixture(scope="module")
def deployed(setup):
    """(b) the same checkpoint through ROS: `robot_bridge.deploy` with the twin backend and the recorder."""
    from robot_bridge.deploy import DeployConfig, deploy

    ros_env = isolated_ros_env()
    saved = {k: os.environ.get(k) for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")}
    os.environ.update({k: ros_env[k] for k in saved})
    try:
        t0 = time.monotonic()
        episodes = deploy(DeployConfig(
            robot_config="twin", checkpoint=str(setup / "ckpt"), dataset=str(setup / "dataset"),
            episodes=EPISODES, episode_s=240.0,
            params={"franka": {"twin_env": str(setup / "task.yaml"), "twin_seed": SEED0},
                    "recorder": {"use_video": False}},  # PNG frames: the stored images are exactly the published
        ))
        print(f"deploy: {EPISODES} episodes of <= {MAX_STEPS} steps in {time.monotonic() - t0:.1f} s")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return episodes, EpisodeStore.load(setup / "dataset", SPEC)


def test_twin_deploy_matches_eval_per_episode(evaluated, deployed):
    results, _ = evaluated
    episodes, _ = deployed
    assert [e["seed"] for e in episodes] == [r.seed for r in results]
    for r, e in zip(results, episodes):
        assert e["done"], f"seed {r.seed}: the bridge episode did not end ({e})"
        assert (e["success"], e["steps"], e["instruction"]) == (r.success, r.length, r.instruction)
        assert e["ret"] == pytest.approx(r.ret, abs=1e-6)


def test_twin_deploy_executes_and_records_what_eval_sees(evaluated, deployed):
    """Every step: the recorded observation is eval's and the executed action is eval's.

    Not bit for bit: the policy node computes the state's rpy from the published pose (float64, `pose.state_rpy`, as
    on the Franka) where the env uses float32 torch, 1 ULP apart (2.4e-7 at roll ≈ π); the resulting ~4e-8 action
    differences move a few edge pixels some steps later, and the episodes drift apart by < 1e-4 in 10 steps
    (measured: state 6e-5, action 8e-5, image ≤ 63 of 49152 values). An observation or action off by one step
    differs by orders of magnitude more (a chunk answering another frame: ~1e-2 per action)."""
    _, frames = evaluated
    _, store = deployed
    assert store.num_episodes == EPISODES
    assert {p.domain for p in store.provenance.values()} == {"real_proxy"}
    assert {p.source for p in store.provenance.values()} == {"policy"}
    assert [store.provenance[k].seed for k in range(EPISODES)] == [SEED0 + k for k in range(EPISODES)]  # the resets
    for k, ep_frames in enumerate(frames):
        rows = np.flatnonzero(store.episode_index == k)
        assert len(rows) == len(ep_frames) == MAX_STEPS
        assert np.array_equal(store.images[rows[0]], ep_frames[0][0]), f"episode {k}: the reset frame differs"
        np.testing.assert_allclose(store.action[rows[0]], ep_frames[0][2], atol=1e-6, err_msg=f"episode {k}: first action")
        for t, (r, (image, state, action, task)) in enumerate(zip(rows, ep_frames)):
            where = f"episode {k} step {t}"
            assert np.abs(store.images[r].astype(np.int16) - image).mean() < 0.1, where
            np.testing.assert_allclose(store.state[r], state, atol=1e-3, err_msg=where)
            np.testing.assert_allclose(store.action[r], action, atol=1e-3, err_msg=where)
            assert store.task[r] == task, where
        # the policy moved the arm (a test of parity between two idle arms would prove nothing)
        assert np.abs(store.action[rows][:, :3]).max() > 1e-3
