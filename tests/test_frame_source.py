"""Frames by source (demo / intervention / policy): LeRobot's `intervention` flag written and read back, HG-DAgger
selection (policy frames never drawn, chunks stop at the hand-back), and weights as draw probabilities in Stage I's
mixture, its device batches and Stage II's anchor stream."""

import numpy as np
import pytest
import torch

from cotrain.data import (ACTION_KEY, ChunkDataset, DatasetError, DatasetWriter, EpisodeStore, FeatureSpec,
                          FrameWeights, Mixture, Provenance, store_from_episodes)
from cotrain.data.device_batches import DeviceBatches
from cotrain.data.frame_source import run_ends
from cotrain.rl.anchor import RealBatchStream, frame_weights


def frames(values, flags=None):
    """One episode: the action's first entry is the frame's value (what a batch reveals), optional flags."""
    out = []
    for k, v in enumerate(values):
        f = {"image": np.zeros((4, 4, 3), np.uint8), "state": np.zeros(8, np.float32),
             "action": np.array([v, 0, 0, 0, 0, 0, 1], np.float32), "task": "t"}
        if flags is not None:
            f["intervention"] = flags[k]
        out.append(f)
    return out


def rollout_store():
    """ep0: teleop demo (2 frames); ep1: a rollout the human corrected at frames 1-2 (flags F T T F);
    ep2: a rollout nobody corrected (F F)."""
    eps = [frames([0.0, 0.1], [True, True]), frames([1.0, 1.1, 1.2, 1.3], [False, True, True, False]),
           frames([2.0, 2.1], [False, False])]
    prov = [Provenance("real_proxy", "teleop"), Provenance("real_proxy", "intervention", 5),
            Provenance("real_proxy", "policy", 6)]
    return store_from_episodes(eps, prov)


def test_sources_follow_provenance_then_the_flag():
    s = rollout_store()
    assert s.sources().tolist() == [0, 0, 2, 1, 1, 2, 2, 2]  # demo demo | policy int int policy | policy policy
    # without flags the episode's provenance decides; without provenance a frame is a demonstration
    bare = store_from_episodes([frames([0.0]), frames([1.0]), frames([2.0])],
                               [Provenance("real", "intervention"), Provenance("real", "policy")])
    assert bare.sources().tolist() == [1, 2, 0]


def test_hg_dagger_default_draws_human_frames_and_chunks_stop_at_the_hand_back():
    d = ChunkDataset(rollout_store(), chunk_size=3, weights=FrameWeights())
    assert d.frames.tolist() == [0, 1, 3, 4]  # policy frames 2, 5, 6, 7 are never items
    first_correction = d[2]  # store frame 3: the correction's actions 1.1, 1.2, then the policy's 1.3 is padding
    assert first_correction[ACTION_KEY][:, 0].tolist() == pytest.approx([1.1, 1.2, 1.2])
    assert first_correction["action_is_pad"].tolist() == [False, False, True]
    assert d[0]["action_is_pad"].tolist() == [False, False, True]  # the demo's own episode end
    # weights=None: every frame, chunks up to the episode's end (the behaviour before frame sources)
    everything = ChunkDataset(rollout_store(), chunk_size=3)
    assert len(everything) == 8 and everything[3]["action_is_pad"].tolist() == [False, False, False]


def test_run_ends_by_hand():
    w = np.array([1, 1, 0, 1, 1, 1, 0, 1.0])
    episode_end = np.array([4, 4, 4, 4, 8, 8, 8, 8])
    assert run_ends(w, episode_end).tolist() == [2, 2, 3, 4, 6, 6, 7, 8]


def test_weights_are_draw_probabilities_in_the_mixture_and_the_anchor():
    """demo 1, intervention 2, policy 0: items are frames 0, 1 (demo, values 0.0 and 0.1) and 3, 4 (corrections,
    1.1 and 1.2), drawn with probability 1/6, 1/6, 2/6, 2/6: the weighted mean of the frame values is
    (0.0 + 0.1 + 2·1.1 + 2·1.2) / 6 = 4.7 / 6 = 0.78333 — what the batches' mean converges to."""
    weights = FrameWeights(demo=1.0, intervention=2.0, policy=0.0)
    d = ChunkDataset(rollout_store(), chunk_size=2, weights=weights)
    assert d.weights.tolist() == [1.0, 1.0, 2.0, 2.0] and not d.uniform
    mix = Mixture([d], [], alpha=1.0, batch_size=100, seed=0)
    assert mix.groups[0].p.tolist() == pytest.approx([1 / 6, 1 / 6, 2 / 6, 2 / 6])
    values = torch.cat([mix.batch(k)[ACTION_KEY][:, 0, 0] for k in range(300)])
    assert values.mean().item() == pytest.approx(4.7 / 6, abs=0.01)
    assert not torch.isin(values, torch.tensor([1.0, 1.3, 2.0, 2.1])).any()  # policy frames never drawn
    stream = RealBatchStream(d, batch_size=100, seed=0, weights=frame_weights([d]))
    values = torch.cat([next(stream)[ACTION_KEY][:, 0, 0] for _ in range(300)])
    assert values.mean().item() == pytest.approx(4.7 / 6, abs=0.01)
    # equal weights: the mixture keeps its epoch permutations (each item once per epoch) and the stream its uniform draw
    uniform = ChunkDataset(rollout_store(), chunk_size=2, weights=FrameWeights())
    assert Mixture([uniform], [], 1.0, 4, seed=0).groups[0].p is None and frame_weights([uniform]) is None


def test_device_batches_gather_the_weighted_mixture():
    real = ChunkDataset(rollout_store(), chunk_size=3, weights=FrameWeights(intervention=3.0))
    sim = ChunkDataset(store_from_episodes([frames([-1.0, -1.1, -1.2])]), chunk_size=3, weights=FrameWeights())
    mix = Mixture([real], [sim], alpha=0.5, batch_size=4, seed=2)
    data = DeviceBatches(mix, 0, 20, torch.device("cpu"), lambda tasks: torch.zeros(len(tasks), 1, dtype=torch.long))
    for k in range(20):
        want, got = mix.batch(k), data.batch(torch.tensor(k))
        assert torch.equal(got.action, want[ACTION_KEY]) and torch.equal(got.action_is_pad, want["action_is_pad"])
        assert torch.equal(got.is_real, want["is_real"])


def test_bad_weights_and_nothing_to_train_on_are_one_clear_error():
    with pytest.raises(ValueError, match=r"frames\.policy=-1"):
        FrameWeights(policy=-1)
    with pytest.raises(ValueError, match="every weight is 0"):
        FrameWeights(demo=0.0, intervention=0.0, policy=0.0)
    only_policy = store_from_episodes([frames([2.0, 2.1], [False, False])], [Provenance("real", "policy")])
    with pytest.raises(DatasetError, match=r"no frame has a positive weight .*'policy': 2"):
        ChunkDataset(only_policy, 2, FrameWeights())


def test_intervention_flag_round_trips_through_lerobot(tmp_path):
    """The recorder's dataset: LeRobot's own LeRobotDataset reads the flag with LeRobot's dagger dtype and shape;
    cotrain reads the sources; appending without flags (or with flags to a dataset without) is refused."""
    from cotrain.data.layout import lerobot_env

    spec = FeatureSpec(image_height=4, image_width=4)
    root = tmp_path / "rollouts"
    with DatasetWriter(root, spec, use_video=False, intervention=True) as w:
        for f in frames([1.0, 1.1, 1.2], [False, True, False]):
            w.add_frame(f["image"], f["state"], f["action"], f["task"], intervention=f["intervention"])
        w.save_episode(Provenance("real_proxy", "intervention", 7))
    lerobot_env()
    from lerobot.datasets import LeRobotDataset

    ds = LeRobotDataset("local/rollouts", root=root)
    assert ds.meta.features["intervention"] == {"dtype": "bool", "shape": [1], "names": None} or \
        ds.meta.features["intervention"] == {"dtype": "bool", "shape": (1,), "names": None}
    assert [bool(ds[i]["intervention"]) for i in range(3)] == [False, True, False]
    store = EpisodeStore.load(root, spec)
    assert store.intervention.tolist() == [False, True, False] and store.sources().tolist() == [2, 1, 2]
    with pytest.raises(DatasetError, match="has a per-frame 'intervention' feature"):
        DatasetWriter(root, spec, use_video=False)
    w = DatasetWriter(root, spec, use_video=False, intervention=True)
    with pytest.raises(ValueError, match="intervention: missing"):
        w.add_frame(np.zeros((4, 4, 3), np.uint8), np.zeros(8), np.zeros(7), "t")
