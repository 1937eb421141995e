"""The α mixture: exact real fraction, reproducible from a seed, resumable, stats of the mixture."""

import numpy as np
import pytest

from cotrain.data import ACTION_KEY, STATE_KEY, ChunkDataset, EpisodeStore, Mixture, NormStats


def fake_store(n_frames, ep_len, value, task):
    """An in-memory store whose state/action carry `value` so batches reveal their source."""
    idx = np.arange(n_frames)
    return EpisodeStore(
        root=None,
        images=np.zeros((n_frames, 4, 4, 3), np.uint8),
        state=np.full((n_frames, 8), value, np.float32) + idx[:, None] * 1e-3,
        action=np.full((n_frames, 7), value, np.float32),
        episode_index=idx // ep_len,
        episode_end=(idx // ep_len + 1) * ep_len,
        task=[task] * n_frames,
        provenance={},
    )


REAL = [ChunkDataset(fake_store(30, 10, 1.0, "real"), 4)]
SIM = [ChunkDataset(fake_store(50, 10, -1.0, "sim"), 4), ChunkDataset(fake_store(20, 5, -2.0, "sim2"), 4)]


@pytest.mark.parametrize("alpha,batch_size", [(0.25, 8), (0.5, 6), (0.0, 5), (1.0, 5), (0.3, 10)])
def test_alpha_exact_in_every_batch_when_integral(alpha, batch_size):
    mix = Mixture(REAL, SIM, alpha, batch_size, seed=1)
    for k in range(200):
        b = mix.batch(k)
        n_real = int(b["is_real"].sum())
        assert n_real == round(alpha * batch_size)
        # the flag tells the truth: real samples carry state ≈ +1, sim ≈ −1 / −2
        assert (b[STATE_KEY][b["is_real"], 0] > 0).all() and (b[STATE_KEY][~b["is_real"], 0] < 0).all()
        assert b[ACTION_KEY].shape == (batch_size, 4, 7)


def test_alpha_exact_over_many_batches_when_fractional():
    mix = Mixture(REAL, SIM, 0.1, 4, seed=0)  # 0.4 real samples per batch
    counts = [int(mix.batch(k)["is_real"].sum()) for k in range(1000)]
    assert set(counts) == {0, 1}
    assert sum(counts) == 400
    assert all(abs(sum(counts[:k]) - 0.4 * k) <= 0.5 for k in range(1, 1001))


def test_reproducible_from_seed_and_resumable():
    a = Mixture(REAL, SIM, 0.5, 6, seed=7)
    b = Mixture(REAL, SIM, 0.5, 6, seed=7)
    c = Mixture(REAL, SIM, 0.5, 6, seed=8)
    it = a.iterate()
    first = [next(it) for _ in range(12)]
    resumed = b.iterate(start=9)
    for k in (9, 10, 11):
        assert np.array_equal(first[k][STATE_KEY].numpy(), next(resumed)[STATE_KEY].numpy())
    assert not np.array_equal(first[0][STATE_KEY].numpy(), c.batch(0)[STATE_KEY].numpy())


def test_each_epoch_visits_every_real_frame_once():
    mix = Mixture(REAL, SIM, 0.5, 6, seed=3)  # 3 real per batch, 30 real frames -> 10 batches an epoch
    seen = np.concatenate([mix.batch(k)[STATE_KEY][:3, 0].numpy() for k in range(10)])
    assert len(np.unique(np.round(seen, 4))) == 30


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match=r"data.alpha=.* must be in \[0, 1\]"):
        Mixture(REAL, SIM, alpha, 4)


def test_missing_group_is_an_error():
    with pytest.raises(ValueError, match="no real dataset"):
        Mixture([], SIM, 0.2, 4)
    with pytest.raises(ValueError, match="no sim dataset"):
        Mixture(REAL, [], 0.5, 4)
    Mixture(REAL, [], 1.0, 4).batch(0)  # real only is fine


def test_norm_stats_are_those_of_the_mixture_distribution():
    # real actions all +1, sim actions -1 (50 frames) and -2 (20 frames); α = 0.25
    stats = Mixture(REAL, SIM, 0.25, 4).norm_stats()
    w_real, w_sim1, w_sim2 = 0.25, 0.75 * 50 / 70, 0.75 * 20 / 70
    mean = w_real * 1 + w_sim1 * -1 + w_sim2 * -2
    var = w_real * 1 + w_sim1 * 1 + w_sim2 * 4 - mean**2
    np.testing.assert_allclose(stats[ACTION_KEY]["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(stats[ACTION_KEY]["std"], np.sqrt(var), rtol=1e-5)
    assert stats[ACTION_KEY]["min"][0] == -2 and stats[ACTION_KEY]["max"][0] == 1
    # α = 1: only the real data counts
    real_only = Mixture(REAL, SIM, 1.0, 4).norm_stats()
    np.testing.assert_allclose(real_only[ACTION_KEY]["mean"], 1.0)
    assert real_only[ACTION_KEY]["min"][0] == 1.0


def test_norm_stats_roundtrip(tmp_path):
    stats = Mixture(REAL, SIM, 0.5, 4).norm_stats()
    stats.save(tmp_path / "s.json")
    back = NormStats.load(tmp_path / "s.json")
    for key in (STATE_KEY, ACTION_KEY):
        for name in ("mean", "std", "min", "max"):
            np.testing.assert_array_equal(back[key][name], stats[key][name])


def test_batch_stats_hand_values():
    import torch

    from cotrain.data.stats import batch_stats

    state = torch.tensor([[1.0] * 8, [3.0] * 8])
    action = torch.tensor([[[0.0] * 7, [2.0] * 7], [[4.0] * 7, [6.0] * 7]])  # [B=2, H=2, 7]: 4 rows
    s = batch_stats({"observation.state": state, "action": action})
    assert s["observation.state"]["mean"][0] == 2.0 and s["observation.state"]["std"][0] == pytest.approx(2 ** 0.5)
    assert s["action"]["mean"][3] == 3.0 and s["action"]["min"][6] == 0.0 and s["action"]["max"][0] == 6.0


def test_box_stats_hand_values():
    from cotrain.data.stats import box_stats

    s = box_stats(2, 3, 0.05)
    assert s["observation.state"]["min"].tolist() == [-1.0, -1.0] and s["observation.state"]["max"].tolist() == [1.0, 1.0]
    assert s["action"]["min"].tolist() == [-0.05] * 3 and s["action"]["max"].tolist() == [0.05] * 3
    assert s["action"]["mean"].tolist() == [0.0] * 3 and s["action"]["std"].tolist() == [1.0] * 3
