"""The vector-env contract Stage II steps (chunked actions, auto-reset, final observations for bootstrapping).

Any object with these members works (the ManiSkill worker pool, a toy env in tests):

    num_envs: int
    reset(seeds: Sequence[int] | None) -> obs
        Start a new episode in every env; env i with seeds[i] when seeds are given.
    step_chunk(actions: float32 CPU Tensor [N, H, A]) -> (obs, reward [N, H], terminated [N], truncated [N], info)
        Run H control steps per env. An env whose episode ends inside the chunk ignores the chunk's remaining
        actions, reports reward 0 for those steps, and is reset at the end of the chunk: its row of `obs` is the
        first observation of its next episode.
        terminated: the episode reached a terminal state (success or failure); no bootstrap.
        truncated: the time limit ended it (and it did not terminate); bootstrap from V(final observation).
        info["final_obs"]: obs dict with N rows; an ended env's row is the last observation of the ended
            episode, the other rows equal `obs`.
        info["success"]: bool [N]; for an ended env, whether the ended episode succeeded (other rows: anything).
    close() -> None
Optional, for stepping groups of envs in turn (`GroupStepper`; `cotrain.envs.vector_env` has them):
    step_chunk_async(actions [len(envs), H, A], envs: range) -> None: start the chunk in envs `envs` only.
    step_chunk_wait(envs: range) -> StepResult: their rows of a `step_chunk` result; info may add "step_s" float [n],
        the seconds each env spent stepping (without waiting for actions or pipes).

obs = {IMAGE_KEY: uint8 [N, h, w, 3], STATE_KEY: float32 [N, S], TASK_KEY: list[str] of length N} (torch
tensors or numpy arrays; see `cotrain.policies.base`). `cotrain.envs.vector_env` implements this contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

Obs = dict[str, Any]
StepResult = tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]


class VecEnv(Protocol):
    num_envs: int

    def reset(self, seeds: Sequence[int] | None = None) -> Obs: ...

    def step_chunk(self, actions: torch.Tensor) -> StepResult: ...

    def close(self) -> None: ...


def obs_to_torch(obs: Obs) -> Obs:
    """Numpy arrays → torch tensors (no copy where possible); lists of strings stay lists."""
    return {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in obs.items()}


def obs_rows(obs: Obs, index: torch.Tensor) -> Obs:
    """Rows `index` (int64 or bool mask over N) of a batched obs dict."""
    if index.dtype == torch.bool:
        index = index.nonzero().squeeze(1)
    out = {}
    for k, v in obs.items():
        if isinstance(v, list):
            out[k] = [v[i] for i in index.tolist()]
        else:
            out[k] = v[index.to(v.device)]
    return out


def check_step(result: StepResult, num_envs: int, chunk_size: int) -> StepResult:
    """Validate a `step_chunk` result against the contract (one clear error naming what is off); flags and
    rewards come back as CPU tensors."""
    obs, reward, terminated, truncated, info = result
    reward, terminated, truncated = torch.as_tensor(reward), torch.as_tensor(terminated), torch.as_tensor(truncated)
    if tuple(reward.shape) != (num_envs, chunk_size):
        raise ValueError(f"step_chunk: reward has shape {tuple(reward.shape)}, expected ({num_envs}, {chunk_size})")
    for name, x in (("terminated", terminated), ("truncated", truncated)):
        if tuple(x.shape) != (num_envs,) or x.dtype != torch.bool:
            raise ValueError(f"step_chunk: {name} must be bool [{num_envs}], got {x.dtype} {tuple(x.shape)}")
    for key in ("final_obs", "success"):
        if key not in info:
            raise ValueError(f"step_chunk: info lacks '{key}' (keys: {sorted(info)})")
    success = torch.as_tensor(info["success"])
    if tuple(success.shape) != (num_envs,):
        raise ValueError(f"step_chunk: info['success'] has shape {tuple(success.shape)}, expected ({num_envs},)")
    if not torch.isfinite(reward).all():
        raise ValueError("step_chunk: reward contains NaN or inf")
    info = dict(info, final_obs=obs_to_torch(info["final_obs"]), success=success.bool().cpu())
    return obs_to_torch(obs), reward.float().cpu(), terminated.cpu(), truncated.cpu(), info


def cat_obs(parts: Sequence[Obs]) -> Obs:
    """Concatenate batched obs dicts along the env dimension (lists of strings are joined)."""
    return {k: sum((p[k] for p in parts), []) if isinstance(parts[0][k], list) else torch.cat([p[k] for p in parts])
            for k in parts[0]}


def steps_groups(env: VecEnv) -> bool:
    """Whether `env` can step a subset of its envs on its own (`step_chunk_async` / `step_chunk_wait`)."""
    return hasattr(env, "step_chunk_async") and hasattr(env, "step_chunk_wait")


class GroupStepper:
    """Steps `env` in groups of envs: `submit(g, actions)` starts group g's chunk, `result(g)` returns its rows.

    Envs with `step_chunk_async`/`step_chunk_wait` step each group on its own: group g's workers run while the caller
    samples actions for another group. Any other VecEnv takes one group, all its envs, stepped by `step_chunk` when
    its result is asked for.
    """

    def __init__(self, env: VecEnv, groups: Sequence[range], chunk_size: int):
        self.env, self.groups, self.chunk_size = env, list(groups), chunk_size
        self.native = steps_groups(env)
        if not self.native and self.groups != [range(env.num_envs)]:
            raise ValueError(f"GroupStepper: {type(env).__name__} cannot step a subset of its envs; "
                             f"give one group of all {env.num_envs} envs, got {self.groups}")
        self.pending: torch.Tensor | None = None

    def submit(self, g: int, actions: torch.Tensor) -> None:
        if self.native:
            self.env.step_chunk_async(actions, self.groups[g])  # type: ignore[attr-defined]
        else:
            self.pending = actions

    def result(self, g: int) -> StepResult:
        envs = self.groups[g]
        if self.native:
            return check_step(self.env.step_chunk_wait(envs), len(envs), self.chunk_size)  # type: ignore[attr-defined]
        if self.pending is None:
            raise RuntimeError("GroupStepper: result() before submit()")
        actions, self.pending = self.pending, None
        return check_step(self.env.step_chunk(actions), len(envs), self.chunk_size)
