"""cotrain.evaluation.run_episode: how many actions of each chunk are executed before the policy observes again."""

from __future__ import annotations

import pytest
import torch

from cotrain.data.spec import IMAGE_KEY, STATE_KEY
from cotrain.evaluation import evaluate_vec, run_episode
from cotrain.policies.base import Policy

H, T = 4, 10  # chunk size; episode length (steps)


class IndexPolicy(Policy):
    """Deterministic chunks whose action h carries h in its first dimension; counts its calls."""

    def __init__(self):
        super().__init__()
        self.chunk_size, self.calls = H, 0
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def sample(self, obs, explore):
        self.calls += 1
        actions = torch.zeros(1, H, 7)
        actions[0, :, 0] = torch.arange(H, dtype=torch.float32)
        return actions, torch.zeros(1), torch.zeros(1), {}

    def evaluate(self, obs, aux):
        raise NotImplementedError

    def sft_loss(self, batch):
        raise NotImplementedError


class CountingEnv:
    """A single env that records the actions it executes and truncates after T steps (success at the end)."""

    instructions = ["pick"]

    def __init__(self):
        self.executed: list[int] = []

    def _obs(self):
        return {IMAGE_KEY: torch.zeros(1, 8, 8, 3, dtype=torch.uint8), STATE_KEY: torch.zeros(1, 8)}

    def reset(self, seed):
        self.executed = []
        return self._obs(), {}

    def step(self, action):
        self.executed.append(int(action[0, 0]))
        done = torch.tensor([len(self.executed) >= T])
        return self._obs(), torch.ones(1), torch.tensor([False]), done, {"success": torch.tensor([True])}


@pytest.mark.parametrize("n_action_steps, calls, executed", [
    (0, 3, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]),  # the whole chunk: ceil(10 / 4) policy calls
    (4, 3, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]),
    (3, 4, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]),
    (1, 10, [0] * 10),  # replan every step: only each chunk's first action runs
])
def test_run_episode_executes_n_action_steps_per_chunk(n_action_steps, calls, executed):
    env, policy = CountingEnv(), IndexPolicy()
    result = run_episode(env, policy, seed=0, n_action_steps=n_action_steps)
    assert policy.calls == calls
    assert env.executed == executed
    assert (result.length, result.ret, result.success) == (T, float(T), True)


@pytest.mark.parametrize("bad", [5, -1])
def test_run_episode_refuses_n_action_steps_outside_the_chunk(bad):
    env = CountingEnv()
    with pytest.raises(ValueError, match=rf"n_action_steps must be in \[0, 4\].*got {bad}"):
        run_episode(env, IndexPolicy(), seed=0, n_action_steps=bad)
    assert env.executed == []  # refused before the first step


class CountingVecEnv:
    """N envs stepping chunks; each episode ends after T steps, a success iff its seed is even; records chunk lengths."""

    def __init__(self, n):
        self.num_envs, self.chunk_lengths = n, []

    def _obs(self):
        return {IMAGE_KEY: torch.zeros(self.num_envs, 8, 8, 3, dtype=torch.uint8), STATE_KEY: torch.zeros(self.num_envs, 8),
                "task": ["pick"] * self.num_envs}

    def reset(self, seeds):
        self.seeds, self.steps = list(seeds), 0
        return self._obs()

    def step_chunk(self, actions):
        h = actions.shape[1]
        self.chunk_lengths.append(h)
        run = min(h, T - self.steps)
        self.steps += run
        rewards = torch.zeros(self.num_envs, h)
        rewards[:, :run] = 1.0
        done = torch.full((self.num_envs,), self.steps >= T)
        success = torch.tensor([s % 2 == 0 for s in self.seeds]) & done
        return self._obs(), rewards, torch.zeros_like(done), done, {"success": success}


class BatchIndexPolicy(IndexPolicy):
    def sample(self, obs, explore):
        self.calls += 1
        b = obs[STATE_KEY].shape[0]
        return torch.zeros(b, H, 7), torch.zeros(b), torch.zeros(b), {}


def test_evaluate_vec_pairs_outcomes_with_seeds_and_executes_n_action_steps():
    env, policy = CountingVecEnv(3), BatchIndexPolicy()
    r = evaluate_vec(env, policy, episodes=4, seed=100, max_episode_steps=T, n_action_steps=3)
    # two rounds (seeds 100-102, then 103-105 of which only 103 counts); ceil(10 / 3) = 4 chunks of 3 per round
    assert policy.calls == 8 and env.chunk_lengths == [3] * 8
    assert r["seeds"] == [100, 101, 102, 103] and r["successes"] == [True, False, True, False]
    assert r["success_rate"] == 0.5 and r["mean_return"] == float(T) and r["episodes"] == 4
