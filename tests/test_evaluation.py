"""cotrain.evaluation.run_episode: how many actions of each chunk are executed before the policy observes again."""

from __future__ import annotations

import pytest
import torch

from cotrain.data.spec import IMAGE_KEY, STATE_KEY
from cotrain.evaluation import run_episode
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
