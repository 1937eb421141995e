"""Flow-SDE / Flow-Noise log-probabilities: hand-worked numbers for the pure functions, and the policy's
log-probs checked against torch.distributions.Normal densities computed independently on the same chains."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch.distributions import Normal
from test_policies_support import HEADS, TINY_SPEC, obs_of, stats_of, synthetic_batch, tiny_config

from cotrain.policies import flow_logprob as fl
from cotrain.policies import make_policy
from cotrain.policies.flow_head import FlowNoise


def test_time_grid_and_sigma_hand_values():
    assert fl.time_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    sigma = fl.flow_sde_sigma(torch.tensor([1.0, 0.75, 0.5, 0.25]), a=0.5, num_steps=4)
    # σ_t = 0.5·√(t/(1−t)); at t = 1 the denominator is 1 − 0.75
    expected = [0.5 * math.sqrt(1 / 0.25), 0.5 * math.sqrt(3.0), 0.5, 0.5 * math.sqrt(1 / 3)]
    assert sigma.tolist() == pytest.approx(expected, abs=1e-6)


def test_gaussian_logprob_and_entropy_hand_values():
    lp = fl.gaussian_logprob(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0]))
    assert lp.tolist() == pytest.approx([-0.5 - 0.918939, -math.log(2) - 0.918939], abs=1e-5)
    assert fl.gaussian_entropy(torch.tensor(1.0)).item() == pytest.approx(1.418939, abs=1e-5)


def test_interpolate_and_loss_hand_values():
    a, eps = torch.tensor([[[1.0, -1.0]]]), torch.tensor([[[0.0, 1.0]]])
    assert fl.interpolate(a, eps, torch.tensor([0.25])).tolist() == [[[0.75, -0.5]]]  # 0.25·ε + 0.75·A
    # u = ε − A = [-1, 2]; v = 0 -> mean of (1, 4) = 2.5
    assert fl.flow_matching_loss(torch.zeros(1, 1, 2), eps, a, torch.tensor([[False]])).item() == pytest.approx(2.5)
    # a second, padded chunk step with a huge error does not count
    a2, eps2 = torch.cat([a, a], 1), torch.cat([eps, eps], 1)
    v2 = torch.cat([torch.zeros(1, 1, 2), torch.full((1, 1, 2), 100.0)], 1)
    assert fl.flow_matching_loss(v2, eps2, a2, torch.tensor([[False, True]])).item() == pytest.approx(2.5)


def test_flow_sde_step_keeps_the_marginal():
    """Data at a point mass A = 0: x_t ~ N(0, t²) and the exact velocity is x/t. One SDE step from t = 0.5 with
    δ = 0.01, a = 0.5 (σ = 0.5): x' = c·x + σ√δ·ε, c = 1 − δ/t − δσ²/(2t²) = 0.975, so
    Var x' = 0.975²·0.25 + 0.25·0.01 = 0.2401563 ≈ (t − δ)² = 0.2401 (first order in δ, as an SDE with the ODE's
    marginals must)."""
    x = torch.tensor([[[1.0]]])
    t = torch.tensor([0.5])
    sigma = fl.flow_sde_sigma(t, a=0.5, num_steps=4)
    mean, std = fl.flow_sde_step(x, x / 0.5, t, 0.01, sigma)
    assert mean.item() == pytest.approx(0.975, abs=1e-6) and std.item() == pytest.approx(0.05, abs=1e-6)
    variance = mean.item() ** 2 * 0.25 + std.item() ** 2
    assert variance == pytest.approx(0.2401563, abs=1e-6)
    assert abs(variance - 0.49**2) < 1e-4


def test_chain_logprob_masks_deterministic_steps_without_nan_gradients():
    chain = torch.zeros(1, 3, 1, 1)
    chain[0, 2] = 1.0
    means = torch.zeros(1, 2, 1, 1, requires_grad=True)
    stds = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1).requires_grad_()  # std 0 on the deterministic step
    stochastic = torch.tensor([[False, True]])
    lp = fl.chain_logprob(chain, means, stds, stochastic)
    assert lp.item() == pytest.approx(-1 / 8 - math.log(2) - 0.918939, abs=1e-5)
    lp.backward()
    assert torch.isfinite(means.grad).all() and torch.isfinite(stds.grad).all()
    assert means.grad[0, 0].item() == 0.0


def _velocity(head, memory, x, t_value):
    return head.velocity(memory, x, torch.full((x.shape[0],), t_value))[0]


@pytest.fixture(scope="module")
def sde_policy():
    torch.manual_seed(0)
    batch = synthetic_batch(n=6)
    return make_policy(tiny_config(HEADS["flow_sde"]), TINY_SPEC, stats_of(batch)), obs_of(batch)


def test_flow_sde_logprob_equals_independent_normal_density(sde_policy):
    policy, obs = sde_policy
    torch.manual_seed(1)
    _, logprob, _, aux = policy.sample(obs, explore=True)
    chain, stochastic = aux["chain"], aux["stochastic"]
    assert stochastic.sum(dim=1).tolist() == [1] * 6  # exactly one stochastic step per rollout
    k_of = stochastic.float().argmax(dim=1)
    assert len(set(k_of.tolist())) > 1  # the step is drawn per sample
    num_steps, a, delta = 4, 0.5, 0.25
    with torch.no_grad():
        memory = policy.head.memory(policy.encode(obs))
        for b in range(6):
            k = int(k_of[b])
            t = 1 - k * delta
            pad = None if memory.pad is None else memory.pad[b : b + 1]
            sub = type(memory)([(kk[b : b + 1], vv[b : b + 1]) for kk, vv in memory.kv], pad)
            x_k = chain[b : b + 1, k]
            v = _velocity(policy.head, sub, x_k, t)
            # RLinf's form of the same transition: predicted endpoints, re-mixed at t − δ with the SDE correction.
            x0_pred, x1_pred = x_k - v * t, x_k + v * (1 - t)
            sigma = a * math.sqrt(t / (1 - (1 - delta if t == 1 else t)))
            mean = x0_pred * (1 - (t - delta)) + x1_pred * (t - delta - sigma**2 * delta / (2 * t))
            expected = Normal(mean, sigma * math.sqrt(delta)).log_prob(chain[b : b + 1, k + 1]).sum()
            assert logprob[b].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-3)
            # the deterministic steps follow the ODE exactly
            for j in range(num_steps):
                if j != k:
                    tj = 1 - j * delta
                    vj = _velocity(policy.head, sub, chain[b : b + 1, j], tj)
                    torch.testing.assert_close(chain[b : b + 1, j + 1], chain[b : b + 1, j] - delta * vj,
                                               rtol=1e-5, atol=1e-5)


def test_flow_noise_logprob_equals_independent_joint_normal_density():
    torch.manual_seed(0)
    batch = synthetic_batch(n=3)
    policy = make_policy(tiny_config(HEADS["flow_noise"]), TINY_SPEC, stats_of(batch))
    obs = obs_of(batch)
    torch.manual_seed(2)
    _, logprob, _, aux = policy.sample(obs, explore=True)
    chain = aux["chain"]
    assert aux["stochastic"].all()
    delta = 0.25
    with torch.no_grad():
        memory = policy.head.memory(policy.encode(obs))
        expected = torch.zeros(3)
        for k in range(4):
            t = torch.full((3,), 1 - k * delta)
            v, h = policy.head.velocity(memory, chain[:, k], t)
            std = 0.08 + 0.08 * torch.sigmoid(policy.head.chain.noise_net(h))
            assert ((std >= 0.08) & (std <= 0.16)).all()
            expected += Normal(chain[:, k] - delta * v, std).log_prob(chain[:, k + 1]).flatten(1).sum(1)
    torch.testing.assert_close(logprob, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_gradient_reaches_the_weights_through_the_logprob(method):
    torch.manual_seed(0)
    batch = synthetic_batch(n=2)
    policy = make_policy(tiny_config(HEADS[method]), TINY_SPEC, stats_of(batch))
    _, _, _, aux = policy.sample(obs_of(batch), explore=True)
    logprob, entropy, value = policy.evaluate(obs_of(batch), aux)
    (logprob.sum() + value.sum()).backward()
    assert policy.head.velocity_out.weight.grad.abs().sum() > 0
    assert policy.image_encoder.proj.weight.grad.abs().sum() > 0
    noise_grad = policy.head.chain.noise_net[0].weight.grad
    if method == "flow_noise":  # the noise network is trained by the log-prob ...
        assert noise_grad.abs().sum() > 0
    else:  # ... and unused by Flow-SDE, whose entropy is a constant of the weights
        assert noise_grad is None
        assert not entropy.requires_grad


def test_evaluate_refuses_deterministic_rollouts(sde_policy):
    policy, obs = sde_policy
    actions, logprob, _, aux = policy.sample(obs, explore=False)
    assert torch.isnan(logprob).all()
    with pytest.raises(ValueError, match="explore=False"):
        policy.evaluate(obs, aux)


def test_flow_sde_evaluate_scores_each_row_at_its_own_step_in_one_velocity_call(sde_policy):
    """Flow-SDE's evaluate runs the velocity once, on each row's stochastic step, and gives what scoring every step
    and masking gives (and what sample recorded)."""
    policy, obs = sde_policy
    torch.manual_seed(2)
    _, logprob, _, aux = policy.sample(obs, explore=True)
    chain = policy.head.chain
    calls = []
    with torch.no_grad():
        ctx = policy.encode(obs)
        velocity = functools.partial(policy.head.velocity, policy.head.memory(ctx))

        def counted(x, t):
            calls.append(x.shape[0])
            return velocity(x, t)

        one_step = chain.evaluate(counted, aux)
        every_step = FlowNoise(chain).score(velocity, aux["chain"], aux["stochastic"])  # every step, SDE transitions
    assert calls == [6]  # one call for the whole batch (scoring every step would make K = 4)
    torch.testing.assert_close(one_step[0], every_step[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one_step[1], every_step[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(one_step[0], logprob, rtol=1e-5, atol=1e-5)


def test_flow_sde_evaluate_refuses_rows_with_several_stochastic_steps(sde_policy):
    policy, obs = sde_policy
    aux = policy.sample(obs, explore=True)[3]
    aux["stochastic"][:, :2] = True  # steps 0 and 1 in every row
    with pytest.raises(ValueError, match="stochastic steps per row.*flow_sde.*records 1"):
        policy.evaluate(obs, aux)
