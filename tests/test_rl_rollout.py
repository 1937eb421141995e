"""Rollout collection over a scripted vector env: chunk rewards, episode ends, bootstrap values, stats."""

import pytest
import torch

from cotrain.data.spec import IMAGE_KEY, STATE_KEY, TASK_KEY
from cotrain.rl.config import RLConfig
from cotrain.rl.rollout import RolloutBuffer, RolloutCollector
from cotrain.rl.trainer import rollout_gae
from doubles.rl_toys import ToyPolicy
from cotrain.rl.vec_env import check_step

N, H = 2, 2
# per chunk t: rewards [N, H], terminated [N], truncated [N], success [N]
SCRIPT = [
    ([[1.0, 2.0], [1.0, 1.0]], [False, False], [False, False], [False, False]),
    ([[3.0, 0.0], [1.0, 1.0]], [True, False], [False, False], [True, False]),  # env 0 succeeds, terminates
    ([[0.5, 0.5], [1.0, 1.0]], [False, False], [False, True], [False, False]),  # env 1 hits the time limit
]


def obs_with(first: float) -> dict:
    state = torch.zeros(N, 8)
    state[:, 0], state[:, 1] = first, torch.arange(N)
    return {IMAGE_KEY: torch.zeros(N, 8, 8, 3, dtype=torch.uint8), STATE_KEY: state, TASK_KEY: ["t"] * N}


class ScriptedEnv:
    """obs state[0] = chunk index t; a final observation has state[0] = 100 + t."""

    num_envs = N

    def __init__(self):
        self.t = 0

    def reset(self, seeds=None):
        self.t = 0
        return obs_with(0.0)

    def step_chunk(self, actions):
        assert actions.shape == (N, H, 7)
        reward, terminated, truncated, success = (torch.tensor(x) for x in SCRIPT[self.t])
        obs, final_obs = obs_with(self.t + 1.0), obs_with(self.t + 1.0)
        done = terminated | truncated
        final_obs[STATE_KEY][done, 0] = 100.0 + self.t
        self.t += 1
        return obs, reward, terminated, truncated, {"final_obs": final_obs, "success": success}

    def close(self):
        pass


def test_collector_sums_chunk_rewards_and_bootstraps_only_truncations():
    torch.manual_seed(0)
    policy = ToyPolicy(chunk_size=H)
    cfg = RLConfig(num_steps=3)
    buffer, stats = RolloutCollector(ScriptedEnv(), policy, cfg).collect(iteration=0)

    torch.testing.assert_close(buffer.rewards, torch.tensor([[3.0, 2.0], [3.0, 2.0], [1.0, 2.0]]))
    torch.testing.assert_close(buffer.obs[STATE_KEY][:, :, 0], torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
    assert buffer.terminated.tolist() == [[False, False], [True, False], [False, False]]
    assert buffer.truncated.tolist() == [[False, False], [False, False], [False, True]]
    # V(final obs) only where truncated (t=2, env 1); the terminated episode gets no bootstrap value
    final_state = obs_with(102.0)
    with torch.no_grad():
        v_final = policy.sample(final_state, explore=False)[2][1]
    expected = torch.zeros(3, N)
    expected[2, 1] = v_final
    torch.testing.assert_close(buffer.final_values, expected)
    assert (stats.episodes, stats.successes, stats.episode_return_sum, stats.env_steps) == (2, 1, 12.0, 3 * N * H)
    assert stats.env_s > 0 and stats.policy_s > 0
    # the last value bootstraps env 0's unfinished episode: returns = advantages + values everywhere
    advantages, returns = rollout_gae(buffer, 0.99, 0.95)
    torch.testing.assert_close(returns, advantages + buffer.values)


def test_flatten_keeps_rows_aligned():
    buffer = RolloutBuffer(num_steps=2, num_envs=3)
    for t in range(2):
        state = torch.full((3, 8), float(t)) + torch.arange(3.0)[:, None] / 10
        obs = {STATE_KEY: state, TASK_KEY: [f"{t}{n}" for n in range(3)]}
        buffer.add(obs, {"actions": torch.arange(3.0) + 10 * t}, torch.arange(3.0) + 10 * t, torch.zeros(3),
                   torch.zeros(3), torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool), torch.zeros(3))
    rows = buffer.flatten(torch.zeros(2, 3), torch.zeros(2, 3)).rows(torch.tensor([4, 1]))  # row t*N + n: (t=1, n=1) and (t=0, n=1)
    assert rows.obs[TASK_KEY] == ["11", "01"]
    torch.testing.assert_close(rows.obs[STATE_KEY][:, 0], torch.tensor([1.1, 0.1]))
    torch.testing.assert_close(rows.aux["actions"], rows.logprobs)
    torch.testing.assert_close(rows.logprobs, torch.tensor([11.0, 1.0]))


def test_step_results_breaking_the_contract_are_named():
    good = ScriptedEnv().step_chunk(torch.zeros(N, H, 7))
    check_step(good, N, H)
    with pytest.raises(ValueError, match=r"reward has shape \(2, 3\), expected \(2, 2\)"):
        check_step((good[0], torch.zeros(N, 3), *good[2:]), N, H)
    with pytest.raises(ValueError, match="info lacks 'final_obs'"):
        check_step((*good[:4], {"success": good[4]["success"]}), N, H)
    with pytest.raises(ValueError, match="truncated must be bool"):
        check_step((*good[:3], torch.zeros(N), good[4]), N, H)
