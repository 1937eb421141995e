"""PPO loss terms against numbers worked by hand."""

import math

import pytest
import torch

from cotrain.rl.ppo_loss import behaviour_weight, explained_variance, normalize_advantages, policy_loss, value_loss


def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([1.5, 0.5, 1.1])
    new_logprob = ratio.log().requires_grad_()
    advantages = torch.tensor([1.0, 1.0, -1.0])
    pg_loss, stats = policy_loss(new_logprob, torch.zeros(3), advantages, clip_coef=0.2)
    # min(r·A, clip(r)·A) = min(1.5, 1.2) = 1.2; min(.5, .8) = .5; min(-1.1, -1.1) = -1.1 → pg_loss = -(0.6)/3
    assert pg_loss.item() == pytest.approx(-0.2)
    assert stats.clipfrac.item() == pytest.approx(2 / 3)
    kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5)) + (0.1 - math.log(1.1))) / 3
    assert stats.approx_kl.item() == pytest.approx(kl)
    assert stats.ratio_dev.item() == pytest.approx(0.5)
    pg_loss.backward()
    # the clipped sample gets no gradient; d/dlogp of -r·A/3 is -r·A/3 for the others
    torch.testing.assert_close(new_logprob.grad, torch.tensor([0.0, -0.5 / 3, 1.1 / 3]))


def test_decoupled_surrogate_by_hand():
    # ratio r = π_θ/π_prox as in the clipped test; the behaviour policy had π_behav = π_prox·(1/2, 1, 1/4)
    ratio = torch.tensor([1.5, 0.5, 1.1])
    new_logprob = ratio.log().requires_grad_()
    prox, behav = torch.zeros(3), torch.tensor([0.5, 1.0, 0.25]).log()
    torch.testing.assert_close(behaviour_weight(prox, behav, cap=None), torch.tensor([2.0, 1.0, 4.0]))
    weight = behaviour_weight(prox, behav, cap=2.0)  # w = min(π_prox/π_behav, 2) = (2, 1, 2)
    pg_loss, stats = policy_loss(new_logprob, prox, torch.tensor([1.0, 1.0, -1.0]), 0.2, weight)
    # w·min(r·A, clip(r)·A) = 2·1.2, 1·0.5, 2·(-1.1) → pg_loss = -(2.4 + 0.5 - 2.2)/3
    assert pg_loss.item() == pytest.approx(-0.7 / 3)
    assert stats.ratio_dev.item() == pytest.approx(0.5)  # the ratio is π_θ/π_prox, the weight does not enter it
    pg_loss.backward()
    torch.testing.assert_close(new_logprob.grad, torch.tensor([0.0, -0.5 / 3, 2 * 1.1 / 3]))


def test_ratio_one_gives_zero_kl_and_clipfrac():
    lp = torch.tensor([-3.0, -1.0])
    pg_loss, stats = policy_loss(lp, lp.clone(), torch.tensor([2.0, -1.0]), 0.2)
    assert pg_loss.item() == pytest.approx(-0.5)
    assert stats.approx_kl.item() == 0.0 and stats.clipfrac.item() == 0.0 and stats.ratio_dev.item() == 0.0


def test_clipped_huber_value_loss_by_hand():
    new = torch.tensor([1.0, 3.0, 1.0])
    old = torch.tensor([0.0, 2.9, 0.0])
    returns = torch.tensor([0.5, 0.0, 1.0])
    # sample 0: unclipped .5²/2 = .125 > clipped (0.2-.5)²/2 = .045
    # sample 1: |3| > δ=1: 1·(3 - .5) = 2.5 both ways
    # sample 2: unclipped 0 < clipped (0.2 - 1)²/2 = .32
    assert value_loss(new, old, returns, 0.2, huber_delta=1.0).item() == pytest.approx((0.125 + 2.5 + 0.32) / 3)
    assert value_loss(new, old, returns, None, huber_delta=1.0).item() == pytest.approx((0.125 + 2.5 + 0.0) / 3)


def test_normalize_advantages():
    torch.testing.assert_close(normalize_advantages(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(normalize_advantages(torch.tensor([4.0])), torch.tensor([0.0]))


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 9.0), returns) == pytest.approx(0.0)
    noisy = returns + torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert explained_variance(noisy, returns) == pytest.approx(1 - (4 / 3) / (5 / 3))  # Var[R−V] = 4/3, Var[R] = 5/3
    assert math.isnan(explained_variance(returns, torch.ones(4)))
