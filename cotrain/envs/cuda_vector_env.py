"""The physx_cuda backend: one process, one ManiSkill env with num_envs = N, same interface as the CPU vector envs.

UNVERIFIED: ManiSkill's GPU sim needs SAPIEN's GPU PhysX library, downloaded from GitHub at first use; no machine
this project runs on can reach it, so this path has never run. Differences from the CPU path, by construction:
all N envs step all H steps of a chunk (an env whose episode ended mid-chunk keeps simulating, with its rewards
masked to 0, and is reset at the chunk end, so its `final_obs` is the chunk-end observation); auto-reset episodes
are seeded from ManiSkill's own episode RNG.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

from cotrain.data.spec import IMAGE_KEY, STATE_KEY, TASK_KEY
from cotrain.envs.config import TaskConfig
from cotrain.envs.make import make_task_env
from cotrain.envs.robot import ROBOT_UID
from cotrain.envs.runner import worker_seed


class CudaVectorEnv:
    def __init__(self, task_cfg: TaskConfig, domain: str, variation: str, obs_mode: Literal["state", "rgb"],
                 num_envs: int, seed: int, robot_uid: str = ROBOT_UID, randomize: bool = False):
        self.num_envs, self.seed = num_envs, seed
        self.env = make_task_env(task_cfg, domain, variation, obs_mode, num_envs=num_envs, sim_backend="physx_cuda",
                                 robot_uid=robot_uid, randomize=randomize)
        self._episodes: list[dict] = []

    @property
    def instructions(self) -> list[str]:
        return list(self.env.instructions)

    def reset(self, seeds: Sequence[int] | None = None) -> dict:
        seeds = [worker_seed(self.seed, i) for i in range(self.num_envs)] if seeds is None else list(seeds)
        obs, _ = self.env.reset(seed=seeds)
        self.episode_return = torch.zeros(self.num_envs)
        self.episode_length = torch.zeros(self.num_envs, dtype=torch.long)
        self.episode_success = torch.zeros(self.num_envs, dtype=torch.bool)
        return self._convert(obs)

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.step_chunk(torch.as_tensor(actions)[:, None])
        return obs, rewards[:, 0], terminated, truncated, info

    def step_chunk(self, actions, render_every_step: bool = False):
        actions = torch.as_tensor(np.asarray(actions), dtype=torch.float32, device=self.env.device)
        n, horizon = actions.shape[:2]
        active = torch.ones(n, dtype=torch.bool, device=self.env.device)
        rewards = torch.zeros(n, horizon, device=self.env.device)
        steps = torch.zeros(n, dtype=torch.long, device=self.env.device)
        success, terminated, truncated = (torch.zeros_like(active) for _ in range(3))
        for h in range(horizon):
            if h == horizon - 1 or render_every_step:
                obs, reward, te, tr, info = self.env.step(actions[:, h])
            else:
                reward, te, tr, info = self.env.step_without_obs(actions[:, h])
            rewards[:, h] = reward * active
            steps += active
            success |= info["success"] & active
            terminated |= te & active
            truncated |= tr & active
            active &= ~(te | tr)
        done = (terminated | truncated).cpu()
        self.episode_return += rewards.sum(1).cpu()
        self.episode_length += steps.cpu()
        self.episode_success |= success.cpu()
        final_obs = self._convert(obs)
        if done.any():
            idx = done.nonzero()[:, 0]
            for i in idx.tolist():
                self._episodes.append(dict(episode_return=float(self.episode_return[i]),
                                           length=int(self.episode_length[i]),
                                           success=bool(self.episode_success[i]), task=final_obs[TASK_KEY][i],
                                           seed=None))
            self.episode_return[idx], self.episode_length[idx], self.episode_success[idx] = 0.0, 0, False
            obs, _ = self.env.reset(options={"env_idx": idx.to(self.env.device)})
        info = {"success": success.cpu(), "steps": steps.cpu(), "final_obs": final_obs}
        return self._convert(obs), rewards.cpu(), terminated.cpu(), truncated.cpu(), info

    def pop_episode_stats(self) -> list[dict]:
        episodes, self._episodes = self._episodes, []
        return episodes

    def close(self) -> None:
        self.env.close()

    def _convert(self, obs: dict) -> dict:
        out = {STATE_KEY: obs[STATE_KEY].cpu(), TASK_KEY: self.instructions}
        if IMAGE_KEY in obs:
            out[IMAGE_KEY] = obs[IMAGE_KEY].cpu()
        return out
