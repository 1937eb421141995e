"""Tiny stand-ins that honour the Policy and VecEnv contracts (test doubles: the RL tests run without SAPIEN).

ToyVecEnv: reach a goal in 3-d. state = (ee xyz, goal xyz, elapsed fraction of the time limit, 0.04) (time is
observed so values stay finite under truncation bootstrapping); the action's first three
entries move the end effector by 0.1·clip(a, −1, 1). Reward per step = −distance; reaching within 0.1 terminates
with +1 (success), leaving the unit box terminates (failure), `max_steps` control steps truncate.
ToyBanditEnv: the same observations, one chunk per episode, reward 1 − mean((a_xyz − 2·goal)²) at the chunk's last
step — a contextual bandit whose best action depends on the observation, with a strong signal per sample (tests
that PPO on a policy learns at all).
ToyPolicy: a Gaussian over the action chunk from an MLP of the state, a value head, MSE as the SFT loss.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY
from cotrain.policies.base import Policy
from cotrain.policies.rng import generator_for

TASK = "reach the goal"
IMAGE_SHAPE = (8, 8, 3)


class ToyVecEnv:
    def __init__(self, num_envs: int, chunk_size: int, max_steps: int = 12, seed: int = 0,
                 image_shape: tuple[int, int, int] = IMAGE_SHAPE, task: str = TASK):
        self.num_envs, self.chunk_size, self.max_steps = num_envs, chunk_size, max_steps
        self.image_shape, self.task = image_shape, task
        self._seed_rngs([seed * 10_007 + i for i in range(num_envs)])
        self.ee = np.zeros((num_envs, 3), np.float32)
        self.goal = np.zeros((num_envs, 3), np.float32)
        self.t = np.zeros(num_envs, np.int64)

    def _seed_rngs(self, seeds: list[int]) -> None:
        self.rngs = [np.random.default_rng(s) for s in seeds]

    def _reset_env(self, i: int) -> None:
        self.ee[i] = self.rngs[i].uniform(-0.5, 0.5, 3)
        self.goal[i] = self.rngs[i].uniform(-0.5, 0.5, 3)
        self.t[i] = 0

    def _obs(self) -> dict:
        time = (self.t / self.max_steps).astype(np.float32)[:, None]
        state = np.concatenate([self.ee, self.goal, time, np.full_like(time, 0.04)], axis=1)
        return {
            IMAGE_KEY: torch.zeros((self.num_envs, *self.image_shape), dtype=torch.uint8),
            STATE_KEY: torch.as_tensor(state, dtype=torch.float32),
            TASK_KEY: [self.task] * self.num_envs,
        }

    def reset(self, seeds: list[int] | None = None) -> dict:
        if seeds is not None:
            self._seed_rngs(list(seeds))
        for i in range(self.num_envs):
            self._reset_env(i)
        return self._obs()

    def _xyz_actions(self, actions: torch.Tensor) -> np.ndarray:
        """The chunk's xyz entries [N, H, 3] as numpy; refuses a wrongly shaped or non-finite chunk."""
        a = actions.detach().cpu().numpy()[..., :3]
        if a.shape[:2] != (self.num_envs, self.chunk_size) or not np.isfinite(a).all():
            raise ValueError(f"{type(self).__name__}.step_chunk: actions must be finite "
                             f"[{self.num_envs}, {self.chunk_size}, 7], got {tuple(actions.shape)}")
        return a

    def step_chunk(self, actions: torch.Tensor):
        a = np.clip(self._xyz_actions(actions), -1.0, 1.0)
        N, H = self.num_envs, self.chunk_size
        reward = np.zeros((N, H), np.float32)
        terminated, truncated, success = (np.zeros(N, bool) for _ in range(3))
        for h in range(H):
            live = ~(terminated | truncated)
            self.ee[live] += 0.1 * a[live, h]
            self.t[live] += 1
            dist = np.linalg.norm(self.ee - self.goal, axis=1)
            reached, left = live & (dist < 0.1), live & (np.abs(self.ee) > 1.0).any(axis=1)
            reward[live, h] = -dist[live] + reached[live]
            success |= reached
            terminated |= reached | left
            truncated |= live & ~(reached | left) & (self.t >= self.max_steps)
        final_obs = self._obs()
        for i in np.flatnonzero(terminated | truncated):
            self._reset_env(i)
        info = {"final_obs": final_obs, "success": torch.as_tensor(success)}
        return self._obs(), torch.as_tensor(reward), torch.as_tensor(terminated), torch.as_tensor(truncated), info

    def close(self) -> None:
        pass


class ToyBanditEnv(ToyVecEnv):
    def __init__(self, num_envs: int, chunk_size: int, seed: int = 0, image_shape: tuple[int, int, int] = IMAGE_SHAPE,
                 task: str = TASK):
        super().__init__(num_envs, chunk_size, max_steps=chunk_size, seed=seed, image_shape=image_shape, task=task)

    def step_chunk(self, actions: torch.Tensor):
        a = self._xyz_actions(actions)
        reward = np.zeros((self.num_envs, self.chunk_size), np.float32)
        reward[:, -1] = 1.0 - ((a - 2.0 * self.goal[:, None, :]) ** 2).mean(axis=(1, 2))
        final_obs = self._obs()
        for i in range(self.num_envs):
            self._reset_env(i)
        done, success = torch.ones(self.num_envs, dtype=torch.bool), torch.as_tensor(reward[:, -1] > 0.9)
        return self._obs(), torch.as_tensor(reward), done, ~done, {"final_obs": final_obs, "success": success}


class ToyPolicy(Policy):
    def __init__(self, chunk_size: int = 2, state_dim: int = 8, action_dim: int = 7, hidden: int = 16):
        super().__init__()
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.trunk = nn.Sequential(nn.Linear(state_dim, hidden), nn.Tanh())
        self.mean_head = nn.Linear(hidden, chunk_size * action_dim)
        self.log_std = nn.Parameter(torch.full((chunk_size, action_dim), -0.5))
        self.value_head = nn.Linear(hidden, 1)

    def _dist(self, obs: dict) -> tuple[torch.distributions.Normal, torch.Tensor]:
        features = self.trunk(torch.as_tensor(obs[STATE_KEY]).float().to(self.log_std.device))
        mean = self.mean_head(features).view(-1, self.chunk_size, self.action_dim)
        return torch.distributions.Normal(mean, self.log_std.exp()), self.value_head(features).squeeze(-1)

    def sample(self, obs, explore):
        dist, value = self._dist(obs)
        if explore:  # Normal.sample(), from the thread's generator (cotrain.policies.rng)
            actions = torch.normal(dist.mean, dist.stddev, generator=generator_for(dist.mean.device)).detach()
        else:
            actions = dist.mean
        return actions, dist.log_prob(actions).sum((1, 2)), value, {"actions": actions}

    def evaluate(self, obs, aux):
        dist, value = self._dist(obs)
        return dist.log_prob(aux["actions"]).sum((1, 2)), dist.entropy().sum((1, 2)), value

    def value(self, obs):
        return self._dist(obs)[1]

    def sft_loss(self, batch):
        dist, _ = self._dist(batch)
        keep = (~batch["action_is_pad"]).float()[..., None].to(dist.mean.device)
        target = batch[ACTION_KEY].to(dist.mean.device)
        return (((dist.mean - target) ** 2) * keep).sum() / (keep.sum() * self.action_dim)


class ToyRealDataset(Dataset):
    """Expert chunks for ToyVecEnv: move straight to the goal; `shift` perturbs the actions (a different dataset)."""

    def __init__(self, size: int, chunk_size: int, seed: int = 0, shift: float = 0.0):
        rng = np.random.default_rng(seed)
        self.ee = rng.uniform(-0.5, 0.5, (size, 3)).astype(np.float32)
        self.goal = rng.uniform(-0.5, 0.5, (size, 3)).astype(np.float32)
        self.chunk_size, self.shift = chunk_size, shift

    def __len__(self) -> int:
        return len(self.ee)

    def __getitem__(self, i: int) -> dict:
        state = np.concatenate([self.ee[i], self.goal[i], [0.0, 0.04]]).astype(np.float32)
        action = np.zeros((self.chunk_size, 7), np.float32)
        action[:, :3] = np.clip((self.goal[i] - self.ee[i]) / (0.1 * self.chunk_size), -1, 1) + self.shift
        return {
            IMAGE_KEY: torch.zeros(IMAGE_SHAPE, dtype=torch.uint8),
            STATE_KEY: torch.as_tensor(state),
            ACTION_KEY: torch.as_tensor(action),
            "action_is_pad": torch.zeros(self.chunk_size, dtype=torch.bool),
            TASK_KEY: TASK,
        }
