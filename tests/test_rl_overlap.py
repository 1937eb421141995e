"""Hiding sampling and the update behind env stepping: grouped rollouts, the overlapped pipeline, decoupled PPO."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from cotrain.data.spec import STATE_KEY
from cotrain.rl.anchor import RealBatchStream
from cotrain.rl.config import RLConfig
from cotrain.rl.pipeline import RolloutPipeline
from cotrain.rl.rollout import RolloutCollector
from doubles.rl_toys import ToyPolicy, ToyRealDataset, ToyVecEnv
from cotrain.rl.trainer import PPOTrainer, training_batch
from cotrain.rl.vec_env import cat_obs

H = 2


pytestmark = pytest.mark.usefixtures("one_thread")


class GroupedToyEnv:
    """ToyVecEnvs side by side, with the subset API of ProcessVectorEnv (`step_chunk_async/_wait`); logs the calls."""

    def __init__(self, sizes, max_steps):
        self.parts = [ToyVecEnv(n, H, max_steps=max_steps) for n in sizes]
        self.starts = list(np.cumsum([0, *sizes[:-1]]))
        self.num_envs = sum(sizes)
        self.pending, self.calls = {}, []

    def reset(self, seeds=None):
        return cat_obs([p.reset(seeds[s:s + p.num_envs]) for p, s in zip(self.parts, self.starts)])

    def step_chunk_async(self, actions, envs):
        part = self.starts.index(envs.start)
        assert len(envs) == self.parts[part].num_envs
        self.calls.append(("send", part))
        self.pending[part] = actions

    def step_chunk_wait(self, envs):
        part = self.starts.index(envs.start)
        self.calls.append(("wait", part))
        return self.parts[part].step_chunk(self.pending.pop(part))


class MeanPolicy(ToyPolicy):
    """Deterministic: acts with the mean (and scores it), whatever `explore` says."""

    def sample(self, obs, explore):
        return super().sample(obs, explore=False)


def test_grouped_rollout_matches_one_group_and_sends_before_it_waits():
    torch.manual_seed(0)
    policy = MeanPolicy(chunk_size=H)
    cfg = RLConfig(num_steps=5, rollout_groups=2)
    one, _ = RolloutCollector(ToyVecEnv(4, H, max_steps=6), policy, cfg).collect(iteration=3)
    env = GroupedToyEnv([2, 2], max_steps=6)
    collector = RolloutCollector(env, policy, cfg)
    assert collector.groups == [range(0, 2), range(2, 4)]
    grouped, stats = collector.collect(iteration=3)
    # group 1's chunk is sent before group 0's result is awaited, and group 0's next chunk before group 1's wait
    assert env.calls[:6] == [("send", 0), ("send", 1), ("wait", 0), ("send", 0), ("wait", 1), ("send", 1)]
    assert len(env.calls) == 2 * 2 * cfg.num_steps
    for name in ("rewards", "values", "logprobs", "final_values", "last_value"):
        torch.testing.assert_close(getattr(grouped, name), getattr(one, name), msg=name)  # up to batch-size rounding
    assert torch.equal(grouped.terminated, one.terminated) and torch.equal(grouped.truncated, one.truncated)
    assert one.truncated.any() and one.final_values.abs().sum() > 0  # the bootstrap path ran
    torch.testing.assert_close(grouped.obs[STATE_KEY], one.obs[STATE_KEY])
    assert stats.env_steps == 4 * H * cfg.num_steps and stats.collect_s >= stats.env_s > 0


def test_rollout_depends_on_weights_and_iteration_only():
    torch.manual_seed(0)
    policy = ToyPolicy(chunk_size=H)
    cfg = RLConfig(num_steps=3)
    collect = RolloutCollector(ToyVecEnv(4, H, max_steps=6), policy, cfg).collect
    global_state = torch.get_rng_state()
    a, _ = collect(iteration=1)
    assert torch.equal(torch.get_rng_state(), global_state)  # sampling left the learner's RNG alone
    torch.rand(5)  # the learner draws from the global RNG in between
    b, _ = collect(iteration=1)
    c, _ = collect(iteration=2)
    assert torch.equal(a.aux["actions"], b.aux["actions"]) and not torch.equal(a.aux["actions"], c.aux["actions"])


def make(overlap, seed=0, beta=0.2):
    torch.manual_seed(seed)
    policy = ToyPolicy(chunk_size=H)
    cfg = RLConfig(num_steps=3, lr=1e-2, value_lr=1e-2, beta=beta, real_batch_size=4, num_minibatches=2,
                   micro_batches=2, overlap_update=overlap)
    pipeline = RolloutPipeline(ToyVecEnv(4, H, max_steps=6), policy, cfg)
    trainer = PPOTrainer(policy, cfg, RealBatchStream(ToyRealDataset(32, H), 4, seed=0) if beta else None)
    return policy, pipeline, trainer


def iterate(pipeline, trainer, n, drain_every=3):
    """Stage II's loop: the pipeline drains before every `drain_every`-th iteration (its checkpoints)."""
    out = []
    for _ in range(n):
        k = trainer.iteration
        buffer, stats = pipeline.rollout(k, prefetch_next=(k + 1) % drain_every != 0)
        out.append(trainer.update(buffer) | {"return": stats.episode_return_sum})
    return out


def test_overlapped_rollout_is_sampled_by_the_weights_from_before_the_update():
    policy, pipeline, trainer = make(overlap=True)
    buffer0, _ = pipeline.rollout(0, prefetch_next=True)  # rollout 1 starts now, with θ_0
    theta0 = copy.deepcopy(policy)
    trainer.update(buffer0)  # θ_0 → θ_1 while rollout 1 runs
    buffer1, _ = pipeline.rollout(1, prefetch_next=False)
    pipeline.close()
    assert buffer1.policy_lag == 1 and buffer0.policy_lag == 0  # the trainer re-scores the lagged one
    batch = training_batch(buffer1, trainer.cfg)
    with torch.no_grad():
        under_theta0 = theta0.evaluate(batch.obs, batch.aux)[0]
        under_theta1 = policy.evaluate(batch.obs, batch.aux)[0]
    torch.testing.assert_close(batch.logprobs, under_theta0)
    assert (batch.logprobs - under_theta1).abs().max() > 1e-3
    # exactly the rollout a synchronous collector with θ_0 collects for iteration 1
    sync, _ = RolloutCollector(ToyVecEnv(4, H, max_steps=6), theta0, trainer.cfg).collect(1)
    assert torch.equal(sync.aux["actions"], buffer1.aux["actions"]) and torch.equal(sync.rewards, buffer1.rewards)
    metrics = trainer.update(buffer1)  # decoupled PPO: ratio vs π_prox = θ_1, weighted by π_prox/π_behav
    assert metrics["initial_ratio_dev"] == 0.0 and metrics["behav_ratio_dev"] > 1e-3
    assert metrics["behav_weight"] != pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("overlap", [False, True])
def test_ratio_is_exactly_one_before_the_first_step_in_both_modes(overlap):
    _, pipeline, trainer = make(overlap)
    metrics = iterate(pipeline, trainer, 3)
    pipeline.close()
    # a lagged rollout (overlap, iterations 1 and 2) is re-scored by the update's own micro-batches: exactly 1; one
    # sampled by the current weights keeps its recorded log-probs: 1 up to the rounding between the rollout's and the
    # update's batch sizes
    lagged = [overlap and k > 0 for k in range(3)]
    assert all(m["initial_ratio_dev"] == 0.0 for m, lag in zip(metrics, lagged) if lag)
    assert all(m["initial_ratio_dev"] < 1e-5 for m in metrics)
    # iteration 1 trains on a rollout sampled before update 0 only with overlap; iteration 0 never lags
    assert metrics[0]["behav_ratio_dev"] < 1e-5
    assert (metrics[1]["behav_ratio_dev"] > 1e-3) == overlap


def test_overlapped_run_resumes_exactly_from_a_drained_checkpoint():
    _, pipeline, trainer = make(overlap=True)
    reference = iterate(pipeline, trainer, 5)  # drains before iteration 3
    pipeline.close()

    policy, pipeline, trainer = make(overlap=True)
    assert iterate(pipeline, trainer, 3) == reference[:3]
    assert pipeline.pending is None  # drained: the checkpoint after update 2 has no rollout in flight
    state = copy.deepcopy({"policy": policy.state_dict(), "trainer": trainer.state_dict()})
    pipeline.close()
    policy, pipeline, trainer = make(overlap=True, seed=123)  # fresh process, different init
    policy.load_state_dict(state["policy"])
    trainer.load_state_dict(state["trainer"])
    assert iterate(pipeline, trainer, 2) == reference[3:]
    pipeline.close()


def test_overlap_is_deterministic_on_the_flow_vla():
    # the VLA's anchor draws flow-matching noise from torch's global RNG in the learner thread while the rollout
    # thread samples from the collector's own generators (no lock): every number is independent of thread timing
    from test_policies_support import HEADS, TASKS, TINY_SPEC, stats_of, synthetic_batch, tiny_config

    from cotrain.policies.factory import make_policy

    demos = synthetic_batch(16, chunk=4)
    real = [{k: v[i] for k, v in demos.items()} for i in range(16)]

    def run():
        torch.manual_seed(0)
        policy = make_policy(tiny_config(HEADS["flow_sde"], chunk_size=4), TINY_SPEC, stats_of(demos))
        cfg = RLConfig(num_steps=2, lr=1e-4, value_lr=1e-3, real_batch_size=4, num_minibatches=2, update_epochs=1)
        env = ToyVecEnv(4, 4, max_steps=8, image_shape=(TINY_SPEC.image_height, TINY_SPEC.image_width, 3),
                        task=TASKS[0])
        pipeline = RolloutPipeline(env, policy, cfg)
        trainer = PPOTrainer(policy, cfg, RealBatchStream(real, 4, seed=0))
        metrics = iterate(pipeline, trainer, 3, drain_every=10)
        pipeline.close()
        return metrics, torch.cat([p.detach().flatten() for p in policy.parameters()])

    (m1, w1), (m2, w2) = run(), run()
    assert m1 == m2 and torch.equal(w1, w2)
    assert all(m["initial_ratio_dev"] == 0.0 for m in m1) and m1[2]["behav_ratio_dev"] > 0


def test_fsdp2_with_overlap_is_refused():
    cfg = dataclasses.replace(RLConfig(), data_parallel="fsdp2")
    with pytest.raises(ValueError, match="rl.overlap_update=false with rl.data_parallel=fsdp2"):
        RolloutPipeline(ToyVecEnv(2, H), ToyPolicy(chunk_size=H), cfg)
