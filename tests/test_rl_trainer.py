"""PPOTrainer: ratio exactly 1 before the first update, value-head lr, micro-batching, learning, exact resume."""

import copy
import dataclasses
import random

import numpy as np
import pytest
import torch

from cotrain.rl.anchor import RealBatchStream
from cotrain.rl.config import RLConfig
from cotrain.rl.rollout import RolloutCollector
from doubles.rl_toys import ToyPolicy, ToyRealDataset, ToyVecEnv
from cotrain.rl.trainer import PPOTrainer, make_optimizer

H = 2


def rollout(policy, cfg, num_envs=4, max_steps=4, iteration=0):
    return RolloutCollector(ToyVecEnv(num_envs, H, max_steps=max_steps), policy, cfg).collect(iteration)[0]


pytestmark = pytest.mark.usefixtures("one_thread")


def flat_params(policy):
    return torch.cat([p.detach().flatten() for p in policy.parameters()])


def test_ppo_ratio_is_one_before_any_update_and_a_lagged_rollout_is_rescored():
    torch.manual_seed(0)
    policy = ToyPolicy(chunk_size=H)
    cfg = RLConfig(num_steps=4, beta=0.0, lr=1e-2, num_minibatches=3, micro_batches=2)
    buffer = rollout(policy, cfg)
    first = PPOTrainer(policy, cfg, None).update(buffer)
    # sampled by the current weights: the recorded log-probs are π_prox (no re-scoring, so no deviation from them);
    # the first forward equals them up to CPU kernels rounding differently for the rollout's and the minibatch's sizes
    assert first["behav_ratio_dev"] == 0.0 and first["initial_ratio_dev"] < 1e-5
    # the same rollout after an update is one update old: re-scored, the ratio vs π_prox is exactly 1 at the first
    # forward, and the sampler's log-probs are visibly not those of the current weights
    buffer.policy_lag = 1
    second = PPOTrainer(policy, cfg, None).update(buffer)
    assert second["initial_ratio_dev"] == 0.0 and second["behav_ratio_dev"] > 1e-4


def test_value_head_has_its_own_learning_rate():
    policy = ToyPolicy(chunk_size=H)
    optimizer = make_optimizer(policy, RLConfig(lr=1e-5, value_lr=3e-4))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["policy"]["lr"] == 1e-5 and groups["value"]["lr"] == 3e-4
    assert {id(p) for p in groups["value"]["params"]} == {id(p) for p in policy.value_head.parameters()}
    n_all = sum(1 for _ in policy.parameters())
    assert len(groups["policy"]["params"]) + len(groups["value"]["params"]) == n_all


def test_critic_warmup_moves_only_the_value_head_then_the_policy_too():
    torch.manual_seed(0)
    policy = ToyPolicy(chunk_size=H)
    cfg = RLConfig(num_steps=4, beta=0.2, lr=1e-2, value_lr=1e-2, critic_warmup_iterations=1)
    real = RealBatchStream(ToyRealDataset(16, H), cfg.real_batch_size, seed=0)
    trainer = PPOTrainer(policy, cfg, real)
    actor = lambda: torch.cat([p.detach().flatten() for n, p in policy.named_parameters()  # noqa: E731
                               if not n.startswith("value_head.")])
    before_actor, before_value = actor(), policy.value_head.weight.detach().clone()
    trainer.update(rollout(policy, cfg))  # warm-up: value loss only (the anchor is off too)
    assert torch.equal(actor(), before_actor) and not torch.equal(policy.value_head.weight, before_value)
    trainer.update(rollout(policy, cfg, iteration=1))
    assert not torch.equal(actor(), before_actor)


def test_value_prefix_matching_nothing_is_refused():
    with pytest.raises(ValueError, match="rl.value_param_prefix='critic.'.*ToyPolicy"):
        make_optimizer(ToyPolicy(chunk_size=H), RLConfig(value_param_prefix="critic."))


def test_micro_batches_accumulate_to_the_minibatch_update():
    torch.manual_seed(0)
    policy = ToyPolicy(chunk_size=H)
    cfg = RLConfig(num_steps=4, beta=0.0, lr=1e-2, value_lr=1e-2, num_minibatches=1, update_epochs=1)
    buffer = rollout(policy, cfg)
    weights = {}
    for micro in (1, 4):
        p = copy.deepcopy(policy)
        PPOTrainer(p, dataclasses.replace(cfg, micro_batches=micro), None).update(buffer)
        weights[micro] = flat_params(p)
    assert not torch.equal(weights[1], flat_params(policy))
    torch.testing.assert_close(weights[4], weights[1], rtol=1e-5, atol=1e-6)


def test_ppo_improves_a_contextual_bandit():
    # one-chunk episodes (max_steps = H), γ = 0: the return is the chunk reward, the advantage its surprise
    torch.manual_seed(0)
    policy = ToyPolicy(chunk_size=H)
    cfg = RLConfig(num_steps=4, beta=0.0, gamma=0.0, lr=1e-2, value_lr=1e-2, update_epochs=4)

    def deterministic_return():
        env = ToyVecEnv(256, H, max_steps=H)
        obs = env.reset(seeds=range(123, 123 + 256))
        with torch.no_grad():
            return env.step_chunk(policy.sample(obs, explore=False)[0])[1].sum().item() / 256

    before = deterministic_return()
    collector, trainer = RolloutCollector(ToyVecEnv(32, H, max_steps=H), policy, cfg), PPOTrainer(policy, cfg, None)
    for _ in range(25):
        trainer.update(collector.collect(trainer.iteration)[0])
    assert deterministic_return() > before + 0.12  # measured: -1.31 → -1.07


def build(init_seed):
    torch.manual_seed(init_seed)
    policy = ToyPolicy(chunk_size=H)
    cfg = RLConfig(num_steps=3, lr=1e-2, value_lr=1e-2, beta=0.2, real_batch_size=4, num_minibatches=2, micro_batches=2)
    collector = RolloutCollector(ToyVecEnv(4, H, max_steps=6), policy, cfg)
    trainer = PPOTrainer(policy, cfg, RealBatchStream(ToyRealDataset(32, H), 4, seed=0))
    return policy, collector, trainer


def iterate(collector, trainer, n):
    out = []
    for _ in range(n):
        buffer, stats = collector.collect(trainer.iteration)
        out.append(trainer.update(buffer) | {"return": stats.episode_return_sum})
    return out


def test_killed_run_resumes_exactly(tmp_path):
    _, collector, trainer = build(0)
    reference = iterate(collector, trainer, 4)

    policy, collector, trainer = build(0)
    assert iterate(collector, trainer, 2) == reference[:2]
    torch.save({"policy": policy.state_dict(), "trainer": trainer.state_dict()}, tmp_path / "ckpt.pt")
    torch.rand(7), np.random.rand(3), random.random()  # the killed process kept drawing random numbers

    policy, collector, trainer = build(123)  # fresh process, different init
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    policy.load_state_dict(state["policy"])
    trainer.load_state_dict(state["trainer"])
    assert trainer.iteration == 2
    assert iterate(collector, trainer, 2) == reference[2:]


def test_resume_without_rng_state_would_differ(tmp_path):
    # the resume test has power: restoring weights and optimizer but not the minibatch-shuffling stream changes
    # later losses (rollouts sample from a stream seeded per iteration, and the toy's learner draws nothing from
    # torch's global RNG: the small VLA's flow-matching anchor does, which `capture_rng` in the state covers)
    _, collector, trainer = build(0)
    reference = iterate(collector, trainer, 3)
    policy, collector, trainer = build(0)
    iterate(collector, trainer, 2)
    state = copy.deepcopy({"policy": policy.state_dict(), "trainer": trainer.state_dict()})
    policy, collector, trainer = build(123)
    policy.load_state_dict(state["policy"])
    trainer.load_state_dict(state["trainer"])
    trainer.generator.manual_seed(5)
    assert iterate(collector, trainer, 1)[0]["loss"] != reference[2]["loss"]


def test_target_kl_ends_the_update_once_the_policy_has_moved_that_far():
    def run(target_kl):
        torch.manual_seed(0)
        policy = ToyPolicy(chunk_size=H)
        cfg = RLConfig(num_steps=4, beta=0.0, lr=1e-1, update_epochs=3, num_minibatches=4, target_kl=target_kl)
        collector, trainer = RolloutCollector(ToyVecEnv(8, H, max_steps=6), policy, cfg), PPOTrainer(policy, cfg, None)
        return trainer.update(collector.collect(0)[0])

    assert run(None)["update_steps"] == 12  # 3 epochs x 4 minibatches
    # the first minibatch's KL is exactly 0 (ratio 1), so one step is always taken; at lr 0.1 the next exceeds 1e-9
    assert run(1e-9)["update_steps"] == 1
    assert 1 < run(10.0)["update_steps"] < 12  # measured: 6 (lr 0.1 on the toy policy moves it fast)
    assert run(1e6)["update_steps"] == 12
