"""HG-DAgger on the twin backend through ROS: a tiny policy drives the real-proxy env, the scripted operator (the
task's expert) takes over when the policy stalls and hands back after a waypoint; the recorder flags exactly the
frames the operator drove, and the dataset opens in LeRobot and loads for Stage I / the anchor."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("rclpy")

from cotrain.data import EpisodeStore, FeatureSpec, FrameWeights, load_dataset  # noqa: E402
from cotrain.policies import make_policy, policy_config_from_dict, save_checkpoint  # noqa: E402
from doubles.bridge import json_safe  # noqa: E402
from doubles.sandbox import isolated_ros_env  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.sapien, pytest.mark.timeout(600)]
SPEC = FeatureSpec()
TINY = {"type": "small_vla", "chunk_size": 4, "d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_ratio": 2,
        "cnn_channels": [8, 16], "value_hidden": 16, "head": {"type": "flow", "num_steps": 2, "n_layers": 1}}
SEED0, EPISODES, MAX_STEPS = 11, 2, 40


@pytest.fixture(scope="module")
def round_(tmp_path_factory):
    from cotrain.envs import load_task_config
    from robot_bridge.deploy import DeployConfig, deploy
    from robot_bridge.nodes.operator_node import OperatorNode
    from robot_bridge.scripted_operator import DriftCriterion

    root = tmp_path_factory.mktemp("intervene")
    stats = {"observation.state": {"mean": np.zeros(8), "std": np.ones(8), "min": -np.ones(8), "max": np.ones(8)},
             "action": {"mean": np.zeros(7), "std": 0.01 * np.ones(7), "min": -0.01 * np.ones(7),
                        "max": 0.01 * np.ones(7)}}  # millimetre steps: the random policy stalls, the operator acts
    torch.manual_seed(0)
    save_checkpoint(root / "ckpt", make_policy(policy_config_from_dict(dict(TINY)), SPEC, stats))
    task = dataclasses.asdict(load_task_config("pick_place"))
    task.pop("source")
    task["max_episode_steps"] = MAX_STEPS
    (root / "task.yaml").write_text(yaml.safe_dump(json_safe(task)))
    operators = []

    def add_operator(nodes):
        operators.append(OperatorNode(nodes["franka"], DriftCriterion(patience=3, progress_m=0.005, min_steps=3)))
        return operators

    ros_env = isolated_ros_env()
    saved = {k: os.environ.get(k) for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")}
    os.environ.update({k: ros_env[k] for k in saved})
    try:
        episodes = deploy(DeployConfig(
            profile="intervene", robot_config="twin", checkpoint=str(root / "ckpt"), dataset=str(root / "dataset"),
            episodes=EPISODES, episode_s=240.0,
            params={"franka": {"twin_env": str(root / "task.yaml"), "twin_seed": SEED0},
                    "teleop": {"input": "none"}, "recorder": {"use_video": False}}), extra_nodes=add_operator)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return root, episodes, operators[0], EpisodeStore.load(root / "dataset", SPEC)


def test_frames_flagged_are_exactly_the_operators_commands(round_):
    _, episodes, op, store = round_
    assert op.sent and op.handbacks, "the scripted operator neither took over nor handed back"
    print(f"operator: {len(op.sent)} commands, hand-backs at {op.handbacks}, {int(store.intervention.sum())} of "
          f"{len(store)} frames flagged")
    assert store.num_episodes == EPISODES and all(e["done"] for e in episodes)
    for k in range(EPISODES):
        rows = np.flatnonzero(store.episode_index == k)
        assert len(rows) == episodes[k]["steps"]
        flagged = set(np.flatnonzero(store.intervention[rows]).tolist())
        sent = {step: np.array(a) for ep, step, a in op.sent if ep == k}
        # a flagged frame is a step the operator answered, with the operator's action (the twin's filter is wide)
        assert flagged <= set(sent), f"episode {k}: frames {sorted(flagged - set(sent))} flagged, never sent"
        for step in flagged:
            np.testing.assert_allclose(store.action[rows[step]], sent[step], atol=1e-6)
        # take-over within one control tick: the first step of every run of operator commands, or the one after it
        starts = [s for s in sorted(sent) if s - 1 not in sent]
        assert all(s in flagged or s + 1 in flagged for s in starts), (k, starts, sorted(flagged))
        # hand-back within one tick: the policy answers the frame the operator handed back at
        for ep, g in op.handbacks:
            if ep == k and g < len(rows):
                assert g not in flagged and g - 1 in flagged, (k, g, sorted(flagged))
        source = store.provenance[k].source
        assert source == ("intervention" if flagged else "policy") and store.provenance[k].seed == SEED0 + k


def test_operator_frames_are_counted_by_the_arm_and_train_stage_one(round_):
    from cotrain.data.layout import lerobot_env

    root, _, op, store = round_
    n_flagged = int(store.intervention.sum())
    assert 0 < n_flagged <= len(op.sent) and n_flagged < len(store)
    # HG-DAgger default: exactly the operator's frames are training items, in the dataset the recorder appended to
    d = load_dataset(root / "dataset", SPEC, 4, FrameWeights())
    assert len(d) == n_flagged and store.intervention[d.frames].all()
    lerobot_env()
    from lerobot.datasets import LeRobotDataset

    ds = LeRobotDataset("local/dataset", root=root / "dataset")
    assert ds.meta.features["intervention"]["dtype"] == "bool"
    assert sum(bool(ds[i]["intervention"]) for i in range(len(ds))) == n_flagged


def test_the_round_retrains_from_the_deployed_weights_on_the_recorded_dataset(round_, tmp_path):
    """Step 2 of `robot_bridge.dagger_round` on the dataset the recorder appended to, without conversion."""
    from robot_bridge.dagger_round import DaggerRoundConfig, retrain

    root, _, _, _ = round_
    cfg = DaggerRoundConfig(checkpoint=str(root / "ckpt"), alpha=1.0, steps=2,
                            stage1={"data": {"batch_size": 4}, "device": "cpu", "warmup_steps": 1, "ema_decay": 0.0})
    ckpt = retrain(cfg, root / "dataset", tmp_path / "stage1")
    assert (ckpt / "model.safetensors").exists()
    with pytest.raises(ValueError, match="episodes=0"):
        DaggerRoundConfig(checkpoint="x", episodes=0)
