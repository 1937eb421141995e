"""The real-data anchor reaches the weights: L = L_ppo + β·L_sft goes through one backward pass.

The public reference implementation computed the SFT term and never backpropagated it; these tests fail if that
(or a detached / wrongly weighted / unlogged term) ever happens here.
"""

import copy
import dataclasses

import pytest
import torch

from cotrain.rl.anchor import RealBatchStream
from cotrain.rl.config import RLConfig
from cotrain.rl.ppo_loss import policy_loss, value_loss
from cotrain.rl.rollout import RolloutCollector
from doubles.rl_toys import ToyPolicy, ToyRealDataset, ToyVecEnv
from cotrain.rl.trainer import PPOTrainer, training_batch

H = 2


def make(beta: float, **cfg_overrides):
    torch.manual_seed(0)
    policy = ToyPolicy(chunk_size=H)
    cfg = RLConfig(**{"num_steps": 3, "beta": beta, "ent_coef": 0.01, "real_batch_size": 8, "lr": 1e-2,
                      "value_lr": 1e-2, "num_minibatches": 2, **cfg_overrides})
    buffer, _ = RolloutCollector(ToyVecEnv(4, H, max_steps=4), policy, cfg).collect(iteration=0)
    return policy, cfg, buffer


def real_batch(shift: float = 0.0, seed: int = 0):
    return next(RealBatchStream(ToyRealDataset(32, H, shift=shift), batch_size=8, seed=seed))


def grads_of(loss, params):
    return [torch.zeros_like(p) if g is None else g
            for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True))]


def independent_terms(policy, cfg, mb, batch):
    logprob, entropy, value = policy.evaluate(mb.obs, mb.aux)
    pg_loss, _ = policy_loss(logprob, mb.logprobs, mb.advantages, cfg.clip_coef)
    v_loss = value_loss(value, mb.values, mb.returns, cfg.vf_clip_coef, cfg.huber_delta)
    return pg_loss, v_loss, entropy.mean(), policy.sft_loss(batch)


def test_gradient_is_ppo_gradient_plus_beta_times_sft_gradient():
    policy, cfg, buffer = make(beta=0.2)
    batch = real_batch()
    trainer = PPOTrainer(policy, cfg, iter([batch]))  # exactly one real batch may be drawn
    mb = training_batch(buffer, cfg)
    params = list(policy.parameters())
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.backward_micro_batch(mb)
    got = [p.grad.clone() for p in params]

    pg_loss, v_loss, entropy, sft_loss = independent_terms(policy, cfg, mb, batch)
    g_ppo = grads_of(pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy, params)
    g_sft = grads_of(sft_loss, params)
    for g, gp, gs in zip(got, g_ppo, g_sft):
        torch.testing.assert_close(g, gp + cfg.beta * gs, rtol=1e-5, atol=1e-7)
    # the check has power: the anchor's share of the gradient is far above the tolerance
    assert max((cfg.beta * gs).abs().max().item() for gs in g_sft) > 1e-2


def test_beta_zero_real_batch_has_no_effect():
    policy, cfg, buffer = make(beta=0.0)
    results = {}
    for beta in (0.0, 0.2):
        for shift in (0.0, 5.0):
            p = copy.deepcopy(policy)
            cfg_b = dataclasses.replace(cfg, beta=beta)
            trainer = PPOTrainer(p, cfg_b, RealBatchStream(ToyRealDataset(32, H, shift=shift), 8, seed=0))
            metrics = trainer.update(buffer)
            results[beta, shift] = (torch.cat([q.detach().flatten() for q in p.parameters()]), metrics["sft_loss"])
    w0, sft0 = results[0.0, 0.0]
    w5, sft5 = results[0.0, 5.0]
    assert torch.equal(w0, w5), "with beta=0 the real batch changed the weights"
    assert sft5 > 10 * sft0, "the real batches were not even evaluated (sft_loss is logged at beta=0)"
    assert not torch.equal(results[0.2, 0.0][0], results[0.2, 5.0][0]), "with beta>0 the real batch had no effect"


def test_anchor_alone_changes_the_weights_towards_the_real_data():
    policy, cfg, buffer = make(beta=1.0, vf_coef=0.0, ent_coef=0.0, update_epochs=3)
    for x in (buffer.rewards, buffer.values, buffer.final_values, buffer.last_value):
        x.zero_()  # zero advantages (GAE of zero rewards and values): only the anchor moves weights
    held_out = real_batch(seed=1)
    before_sft = policy.sft_loss(held_out).item()
    before = copy.deepcopy(policy.state_dict())
    PPOTrainer(policy, cfg, RealBatchStream(ToyRealDataset(32, H), 8, seed=0)).update(buffer)
    assert policy.sft_loss(held_out).item() < 0.9 * before_sft
    assert not torch.equal(policy.mean_head.weight, before["mean_head.weight"])
    assert torch.equal(policy.value_head.weight, before["value_head.weight"])  # vf_coef = 0: no value gradient


def test_logged_terms_are_the_backpropagated_terms():
    # norm_adv=False: with normalised advantages pg_loss at ratio 1 is 0 up to rounding, a weak check
    policy, cfg, buffer = make(beta=0.3, num_minibatches=1, update_epochs=1, norm_adv=False)
    batch = real_batch()
    mb = training_batch(buffer, cfg)
    with torch.no_grad():
        pg_loss, v_loss, entropy, sft_loss = (x.item() for x in independent_terms(policy, cfg, mb, batch))
    metrics = PPOTrainer(policy, cfg, iter([batch])).update(buffer)
    expected = {"pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy, "sft_loss": sft_loss,
                "loss": pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy + cfg.beta * sft_loss}
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, rel=1e-5), name


def test_positive_beta_without_real_batches_is_refused():
    policy, cfg, _ = make(beta=0.2)
    with pytest.raises(ValueError, match="rl.beta=0.2 needs real batches"):
        PPOTrainer(policy, cfg, None)


def test_real_batch_stream_resumes_its_draw_order():
    stream = RealBatchStream(ToyRealDataset(32, H), 4, seed=3)
    next(stream)
    state = copy.deepcopy(stream.state_dict())
    expected = [next(stream)["observation.state"] for _ in range(2)]
    resumed = RealBatchStream(ToyRealDataset(32, H), 4, seed=99)
    resumed.load_state_dict(state)
    for e in expected:
        assert torch.equal(next(resumed)["observation.state"], e)
    assert next(resumed)["task"] == ["reach the goal"] * 4
