"""Rollouts: the buffer of T chunks x N envs, and the collector that fills it from a vector env.

The collector only acts and records; GAE (`gae.py`) turns the record into advantages, PPO (`trainer.py`) learns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cotrain.policies.base import Policy
from cotrain.rl.config import RLConfig
from cotrain.rl.gae import compute_gae
from cotrain.rl.vec_env import Obs, VecEnv, check_step, obs_rows, obs_to_torch


@dataclass
class Batch:
    """Flat PPO samples (B = T*N chunks): what the update needs, nothing else."""

    obs: Obs
    aux: dict[str, torch.Tensor]
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def __len__(self) -> int:
        return self.logprobs.shape[0]

    def rows(self, index: torch.Tensor) -> "Batch":
        def take(x: torch.Tensor) -> torch.Tensor:
            return x[index.to(x.device)]

        return Batch(
            obs=obs_rows(self.obs, index),
            aux={k: take(v) for k, v in self.aux.items()},
            logprobs=take(self.logprobs),
            values=take(self.values),
            advantages=take(self.advantages),
            returns=take(self.returns),
        )


class RolloutBuffer:
    """Preallocated [T, N] storage; obs and aux tensors are allocated on first `add` from their shapes."""

    def __init__(self, num_steps: int, num_envs: int, device: torch.device | str = "cpu"):
        self.num_steps, self.num_envs, self.device = num_steps, num_envs, torch.device(device)
        T, N = num_steps, num_envs
        self.obs: dict[str, Any] = {}
        self.aux: dict[str, torch.Tensor] = {}
        self.logprobs = torch.zeros(T, N, device=self.device)
        self.values = torch.zeros(T, N, device=self.device)
        self.rewards = torch.zeros(T, N, device=self.device)
        self.terminated = torch.zeros(T, N, dtype=torch.bool, device=self.device)
        self.truncated = torch.zeros(T, N, dtype=torch.bool, device=self.device)
        self.final_values = torch.zeros(T, N, device=self.device)
        self.advantages: torch.Tensor | None = None
        self.returns: torch.Tensor | None = None
        self.step = 0

    def _store(self, store: dict[str, Any], key: str, value: Any) -> None:
        t = self.step
        if isinstance(value, list):
            store.setdefault(key, [None] * self.num_steps)[t] = value
            return
        value = torch.as_tensor(value)
        if value.shape[0] != self.num_envs:
            raise ValueError(f"rollout: '{key}' has leading dim {value.shape[0]}, expected num_envs={self.num_envs}")
        if key not in store:
            store[key] = torch.empty((self.num_steps, *value.shape), dtype=value.dtype, device=self.device)
        store[key][t] = value.to(self.device)

    def add(
        self,
        obs: Obs,
        aux: dict[str, torch.Tensor],
        logprob: torch.Tensor,
        value: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        final_value: torch.Tensor,
    ) -> None:
        """Record chunk t: the obs it was chosen from, what `evaluate` needs, and what followed."""
        if self.step >= self.num_steps:
            raise IndexError(f"rollout buffer is full ({self.num_steps} steps)")
        for k, v in obs.items():
            self._store(self.obs, k, v)
        for k, v in aux.items():
            self._store(self.aux, k, v)
        t = self.step
        self.logprobs[t], self.values[t], self.rewards[t] = logprob, value, reward
        self.terminated[t], self.truncated[t], self.final_values[t] = terminated, truncated, final_value
        self.step += 1

    def compute_returns(self, last_value: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        if self.step != self.num_steps:
            raise RuntimeError(f"rollout has {self.step} of {self.num_steps} steps; finish it before computing returns")
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, self.terminated, self.truncated, self.final_values,
            last_value.to(self.device), gamma, gae_lambda,
        )

    def flatten(self) -> Batch:
        """[T, N, ...] → [T*N, ...] (row t*N + n is chunk t of env n)."""
        if self.advantages is None or self.returns is None:
            raise RuntimeError("call compute_returns before flatten")

        def flat(x: Any) -> Any:
            if isinstance(x, list):
                return [item for row in x for item in row]
            return x.reshape(-1, *x.shape[2:])

        return Batch(
            obs={k: flat(v) for k, v in self.obs.items()},
            aux={k: flat(v) for k, v in self.aux.items()},
            logprobs=flat(self.logprobs),
            values=flat(self.values),
            advantages=flat(self.advantages),
            returns=flat(self.returns),
        )


def reset_seeds(seed: int, rank: int, iteration: int, num_envs: int) -> list[int]:
    """Per-env reset seeds for (run seed, rank, iteration): distinct per env, rank and iteration, reproducible."""
    return [int(s) for s in np.random.SeedSequence([seed, rank, iteration]).generate_state(num_envs)]


@dataclass
class RolloutStats:
    """Sums over one rollout on this rank (reduce across ranks with `distributed.all_reduce_sum`)."""

    episodes: float = 0.0
    successes: float = 0.0
    episode_return_sum: float = 0.0
    env_steps: float = 0.0
    """N·H per chunk: control steps the policy chose (an episode ending inside a chunk runs fewer)."""
    env_s: float = 0.0
    """Wall-clock seconds inside `env.step_chunk` (this rank)."""
    policy_s: float = 0.0
    """Wall-clock seconds sampling actions and bootstrap values (this rank; includes the GPU→CPU copy)."""


class RolloutCollector:
    """Steps `env` with `policy.sample(explore=True)` for T chunks and records them in a RolloutBuffer."""

    def __init__(
        self, env: VecEnv, policy: Policy, cfg: RLConfig, rank: int = 0, storage_device: torch.device | str = "cpu"
    ):
        self.env, self.policy, self.cfg, self.rank = env, policy, cfg, rank
        self.storage_device = storage_device
        self.num_envs = env.num_envs
        self.chunk_size = policy.chunk_size
        self.next_obs: Obs | None = None
        self.episode_return = torch.zeros(self.num_envs)

    def value_of(self, obs: Obs) -> torch.Tensor:
        """V(obs) through the Policy interface (deterministic sample; a `value` method would be cheaper)."""
        return self.policy.sample(obs, explore=False)[2]

    @torch.no_grad()
    def collect(self, iteration: int) -> tuple[RolloutBuffer, RolloutStats]:
        cfg, N = self.cfg, self.num_envs
        if cfg.reset_every_iteration or self.next_obs is None:
            self.next_obs = obs_to_torch(self.env.reset(seeds=reset_seeds(cfg.seed, self.rank, iteration, N)))
            self.episode_return.zero_()
        obs = self.next_obs
        buffer = RolloutBuffer(cfg.num_steps, N, self.storage_device)
        stats = RolloutStats()
        for _ in range(cfg.num_steps):
            t0 = time.perf_counter()
            actions, logprob, value, aux = self.policy.sample(obs, explore=True)
            actions = actions.detach().float().cpu()
            t1 = time.perf_counter()
            next_obs, reward, terminated, truncated, info = check_step(self.env.step_chunk(actions), N, self.chunk_size)
            t2 = time.perf_counter()
            reward = reward.sum(dim=1)  # r_t of a chunk = Σ_h r_{t,h}
            bootstrap = truncated & ~terminated
            final_value = torch.zeros(N)
            if bootstrap.any():
                final_value[bootstrap] = self.value_of(obs_rows(info["final_obs"], bootstrap)).float().cpu()
            stats.policy_s += (t1 - t0) + (time.perf_counter() - t2)
            stats.env_s += t2 - t1
            buffer.add(obs, aux, logprob, value, reward, terminated, truncated, final_value)
            done = terminated | truncated
            self.episode_return += reward
            stats.episodes += float(done.sum())
            stats.successes += float((info["success"] & done).sum())
            stats.episode_return_sum += float(self.episode_return[done].sum())
            stats.env_steps += N * self.chunk_size
            self.episode_return[done] = 0.0
            obs = next_obs
        self.next_obs = obs
        # V(s_T) is read only for envs whose episode goes on (with reset_every_iteration all usually end at T)
        t0 = time.perf_counter()
        last_value = torch.zeros(N) if bool(done.all()) else self.value_of(obs).float().cpu()
        stats.policy_s += time.perf_counter() - t0
        buffer.compute_returns(last_value, cfg.gamma, cfg.gae_lambda)
        return buffer, stats
