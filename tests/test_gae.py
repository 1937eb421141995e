"""GAE per chunk, worked by hand: termination stops the bootstrap, truncation bootstraps from V(final obs)."""

import pytest
import torch

from cotrain.rl.gae import compute_gae

GAMMA, LAM = 0.99, 0.95


def gae(rewards, values, terminated, truncated, final_values, last_value):
    t = lambda x, dt=torch.float32: torch.tensor(x, dtype=dt)  # noqa: E731
    return compute_gae(
        t(rewards), t(values), t(terminated, torch.bool), t(truncated, torch.bool), t(final_values), t(last_value),
        GAMMA, LAM,
    )


def test_three_steps_with_a_terminal_and_a_truncated_step():
    # env 0: t0 goes on, t1 terminates, t2 is truncated (final obs value 0.9); last_value 100 must not be read.
    # env 1: no episode end, bootstraps from last_value 0.4.
    adv, ret = gae(
        rewards=[[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]],
        values=[[0.5, 0.1], [0.6, 0.2], [0.7, 0.3]],
        terminated=[[False, False], [True, False], [False, False]],
        truncated=[[False, False], [False, False], [True, False]],
        final_values=[[-7.0, -7.0], [-7.0, -7.0], [0.9, -7.0]],  # -7: not truncated there, must be ignored
        last_value=[100.0, 0.4],
    )
    # env 0 by hand:
    # t2 truncated: δ2 = 3 + .99*.9 - .7 = 3.191, Â2 = δ2 (episode ended)
    # t1 terminated: δ1 = 2 - .6 = 1.4, Â1 = δ1
    # t0: δ0 = 1 + .99*.6 - .5 = 1.094, Â0 = 1.094 + .99*.95*1.4 = 2.4107
    # env 1: δ2 = 1 + .99*.4 - .3 = 1.096; δ1 = .99*.3 - .2 = .097, Â1 = .097 + .9405*1.096 = 1.127788
    #        δ0 = .99*.2 - .1 = .098, Â0 = .098 + .9405*1.127788 = 1.158684614
    expected = torch.tensor([[2.4107, 1.158684614], [1.4, 1.127788], [3.191, 1.096]])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(ret, expected + torch.tensor([[0.5, 0.1], [0.6, 0.2], [0.7, 0.3]]), rtol=0, atol=1e-5)


def test_terminated_wins_over_truncated():
    adv, _ = gae([[1.0]], [[0.5]], [[True]], [[True]], [[50.0]], [50.0])
    assert adv.item() == pytest.approx(0.5)  # 1 - .5, no bootstrap from either value


def test_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match="final_values"):
        compute_gae(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool),
                    torch.zeros(3, 2, dtype=torch.bool), torch.zeros(3), torch.zeros(2), GAMMA, LAM)
