"""Rollouts: the buffer of T chunks x N envs, and the collector that fills it from a vector env.

The collector only acts and records: per chunk the obs, the sampled chunk's aux and log-prob, V(s_t), the reward and
how the episode ended, and the bootstrap values (`Policy.value`: V(final obs) after a truncation, V(s_T) after the last
chunk). The trainer turns the record into advantages (`gae.py`) and learns (`trainer.py`).
It steps the envs in groups (`rl.rollout_groups`): while group g's workers run their chunk, it samples the next
chunk of group g+1, so sampling hides behind env stepping. Sampling draws from the collector's own generators
(`RNGStream`, seeded by (seed, rank, iteration)), never from torch's global RNG, which the learner alone uses: a
rollout is a function of the weights and the iteration only, even while an update runs in another thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cotrain.policies.base import Policy
from cotrain.policies.rng import draw_from
from cotrain.rl.config import RLConfig
from cotrain.rl.vec_env import GroupStepper, Obs, VecEnv, cat_obs, obs_rows, obs_to_torch, steps_groups


class RNGStream:
    """The collector's own generators (CPU, and the device's on CUDA), seeded per rollout; `with stream:` makes the
    policies in this thread draw from them (`cotrain.policies.rng.draw_from`).

    torch's global generators stay the learner's: a rollout in another thread never touches them, no lock needed.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.cpu = torch.Generator()
        self.accel = torch.Generator(self.device) if self.device.type != "cpu" else None

    def seed(self, seed: int) -> None:
        self.cpu.manual_seed(seed)
        if self.accel is not None:
            self.accel.manual_seed(seed)

    def __enter__(self) -> "RNGStream":
        self._context = draw_from(self.cpu, self.accel)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)


@dataclass
class Batch:
    """Flat PPO samples (B = T*N chunks): what the update needs, nothing else."""

    obs: Obs
    aux: dict[str, torch.Tensor]
    logprobs: torch.Tensor
    """log π_behav(a|s): the weights that sampled the rollout."""
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    prox_logprobs: torch.Tensor | None = None
    """log π_prox(a|s): the weights the update starts from (the trainer's re-scoring; None until then)."""

    def __len__(self) -> int:
        return self.logprobs.shape[0]

    def to(self, device: torch.device) -> "Batch":
        """The same rows with every tensor on `device` (lists stay)."""
        def move(x: Any) -> Any:
            return x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x

        return Batch(obs={k: move(v) for k, v in self.obs.items()}, aux={k: move(v) for k, v in self.aux.items()},
                     logprobs=move(self.logprobs), values=move(self.values), advantages=move(self.advantages),
                     returns=move(self.returns), prox_logprobs=move(self.prox_logprobs))

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
            prox_logprobs=None if self.prox_logprobs is None else take(self.prox_logprobs),
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
        self.last_value = torch.zeros(N, device=self.device)
        """V(s_T) of the observation after the last chunk (bootstraps episodes that go on past the rollout)."""
        self.policy_lag = 0
        """Updates between the weights that sampled this rollout and the learner's when it is handed over (1: collected
        during the previous update, rl.overlap_update); the trainer re-scores a lagged rollout (π_prox)."""
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

    @property
    def full(self) -> bool:
        return self.step == self.num_steps

    def flatten(self, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
        """[T, N, ...] → [T*N, ...] (row t*N + n is chunk t of env n), with the [T, N] advantages and returns."""
        if not self.full:
            raise RuntimeError(f"rollout has {self.step} of {self.num_steps} steps; finish it before flattening")

        def flat(x: Any) -> Any:
            if isinstance(x, list):
                return [item for row in x for item in row]
            return x.reshape(-1, *x.shape[2:])

        return Batch(
            obs={k: flat(v) for k, v in self.obs.items()},
            aux={k: flat(v) for k, v in self.aux.items()},
            logprobs=flat(self.logprobs),
            values=flat(self.values),
            advantages=flat(advantages.to(self.device)),
            returns=flat(returns.to(self.device)),
        )


def reset_seeds(seed: int, rank: int, iteration: int, num_envs: int) -> list[int]:
    """Per-env reset seeds for (run seed, rank, iteration): distinct per env, rank and iteration, reproducible."""
    return [int(s) for s in np.random.SeedSequence([seed, rank, iteration]).generate_state(num_envs)]


def sampling_seed(seed: int, rank: int, iteration: int) -> int:
    """Seed of rollout `iteration`'s sampling stream on `rank` (independent of the reset seeds)."""
    return int(np.random.SeedSequence([seed, rank, iteration, 1]).generate_state(1)[0])


def env_groups(num_envs: int, groups: int) -> list[range]:
    """min(groups, num_envs) contiguous ranges of envs of (nearly) equal size."""
    bounds = np.linspace(0, num_envs, min(groups, num_envs) + 1).round().astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass
class RolloutStats:
    """Sums over one rollout on this rank (reduce across ranks with `distributed.all_reduce_sum`)."""

    episodes: float = 0.0
    successes: float = 0.0
    episode_return_sum: float = 0.0
    env_steps: float = 0.0
    """N·H per chunk: control steps the policy chose (an episode ending inside a chunk runs fewer)."""
    env_s: float = 0.0
    """Seconds the envs spent stepping: per chunk, the slowest env's time inside its runner when the env reports it
    (info["step_s"]), else the time spent waiting for the env's results. N·H·T / env_s is the raw env rate."""
    policy_s: float = 0.0
    """Seconds sampling actions and bootstrap values (this rank; includes the GPU→CPU copy)."""
    collect_s: float = 0.0
    """Wall-clock seconds of the whole rollout (env stepping and sampling overlap when rl.rollout_groups > 1)."""


@dataclass
class _Chunk:
    """One group's chunk t: the obs it was chosen from, the policy's output, what followed."""

    obs: Obs
    actions: torch.Tensor
    logprob: torch.Tensor
    value: torch.Tensor
    aux: dict[str, torch.Tensor]
    outcome: tuple = field(default=())
    """(reward [n], terminated, truncated, final_value, success) once stepped."""


class RolloutCollector:
    """Steps `env` with `policy.sample(explore=True)` for T chunks and records them in a RolloutBuffer.

    The envs are split into `rl.rollout_groups` groups when the env can step a subset (`steps_groups`; otherwise
    one group: grouping would only reorder the work); per chunk and group: wait for the group's results, sample
    and send its next chunk, then compute its bootstrap values. The buffer does not depend on the grouping except
    through the order of sampling draws (identical for a deterministic policy).
    """

    def __init__(
        self, env: VecEnv, policy: Policy, cfg: RLConfig, rank: int = 0, storage_device: torch.device | str = "cpu"
    ):
        self.env, self.policy, self.cfg, self.rank = env, policy, cfg, rank
        self.storage_device = storage_device
        self.num_envs = env.num_envs
        self.chunk_size = policy.chunk_size
        self.groups = env_groups(self.num_envs, cfg.rollout_groups if steps_groups(env) else 1)
        self.rng = RNGStream(next(policy.parameters()).device)
        self.next_obs: Obs | None = None
        self.episode_return = torch.zeros(self.num_envs)

    def value_of(self, obs: Obs) -> torch.Tensor:
        """V(obs) through the Policy interface: `Policy.value`, no action sampling."""
        return self.policy.value(obs).float().cpu()

    def _act(self, stepper: GroupStepper, g: int, obs: Obs, stats: RolloutStats) -> _Chunk:
        """Sample group g's next chunk and send it to the envs."""
        t0 = time.perf_counter()
        with self.rng:
            actions, logprob, value, aux = self.policy.sample(obs, explore=True)
        chunk = _Chunk(obs, actions.detach().float().cpu(), logprob, value, aux)
        stats.policy_s += time.perf_counter() - t0
        stepper.submit(g, chunk.actions)
        return chunk

    def _record(self, buffer: RolloutBuffer, chunks: list[_Chunk], stats: RolloutStats) -> torch.Tensor:
        """Add chunk t of every group to the buffer and the episode statistics; returns `done` [N]."""
        reward, terminated, truncated, final_value, success = (torch.cat(x) for x in zip(*(c.outcome for c in chunks)))
        aux = {k: torch.cat([c.aux[k] for c in chunks]) for k in chunks[0].aux}
        logprob, value = (torch.cat([getattr(c, k) for c in chunks]) for k in ("logprob", "value"))
        buffer.add(cat_obs([c.obs for c in chunks]), aux, logprob, value, reward, terminated, truncated, final_value)
        done = terminated | truncated
        self.episode_return += reward
        stats.episodes += float(done.sum())
        stats.successes += float((success & done).sum())
        stats.episode_return_sum += float(self.episode_return[done].sum())
        stats.env_steps += self.num_envs * self.chunk_size
        self.episode_return[done] = 0.0
        return done

    @torch.no_grad()
    def collect(self, iteration: int) -> tuple[RolloutBuffer, RolloutStats]:
        cfg, N, start = self.cfg, self.num_envs, time.perf_counter()
        self.rng.seed(sampling_seed(cfg.seed, self.rank, iteration))
        if cfg.reset_every_iteration or self.next_obs is None:
            self.next_obs = obs_to_torch(self.env.reset(seeds=reset_seeds(cfg.seed, self.rank, iteration, N)))
            self.episode_return.zero_()
        buffer = RolloutBuffer(cfg.num_steps, N, self.storage_device)
        stats = RolloutStats()
        stepper = GroupStepper(self.env, self.groups, self.chunk_size)
        obs = [obs_rows(self.next_obs, torch.arange(r.start, r.stop)) for r in self.groups]
        chunks = [self._act(stepper, g, obs[g], stats) for g in range(len(self.groups))]
        for t in range(cfg.num_steps):
            following, waits, step_s = [], [], []
            for g, chunk in enumerate(chunks):
                t0 = time.perf_counter()
                obs[g], reward, terminated, truncated, info = stepper.result(g)
                waits.append(time.perf_counter() - t0)
                step_s.append(float(info["step_s"].max()) if "step_s" in info else None)
                if t + 1 < cfg.num_steps:  # keep this group's workers busy before anything else
                    following.append(self._act(stepper, g, obs[g], stats))
                t0 = time.perf_counter()
                bootstrap = truncated & ~terminated  # V(final obs) only where the time limit cut the episode
                final_value = torch.zeros(len(bootstrap))
                if bootstrap.any():
                    final_value[bootstrap] = self.value_of(obs_rows(info["final_obs"], bootstrap))
                stats.policy_s += time.perf_counter() - t0
                chunk.outcome = (reward.sum(dim=1), terminated, truncated, final_value, info["success"])  # Σ_h r_{t,h}
            stats.env_s += max(step_s) if None not in step_s else sum(waits)  # type: ignore[type-var]
            done = self._record(buffer, chunks, stats)
            chunks = following
        self.next_obs = cat_obs(obs)
        # V(s_T) is read only for envs whose episode goes on (with reset_every_iteration all usually end at T)
        t0 = time.perf_counter()
        if not bool(done.all()):
            buffer.last_value.copy_(self.value_of(self.next_obs))
        stats.policy_s += time.perf_counter() - t0
        stats.collect_s = time.perf_counter() - start
        return buffer, stats
