"""One twin env with auto-reset, episode statistics and chunk-aware stepping (what each vector-env worker runs).

Chunk-aware: of the H control steps of an action chunk only the last one renders the camera (the policy observes
only at chunk ends); the H−1 intermediate steps run `TwinTaskEnv.step_without_obs` (action, physics, info, reward).
An episode that ends inside a chunk ends the chunk for this env: its final observation is rendered, the env resets,
and the observation returned is the first one of the next episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cotrain.data.spec import IMAGE_KEY, STATE_KEY
from cotrain.envs.config import TaskConfig
from cotrain.envs.make import make_task_env
from cotrain.envs.robot import ROBOT_UID


def worker_seed(seed: int, index: int) -> int:
    """The seed of worker `index`'s episode-seed stream."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


@dataclass
class ChunkResult:
    obs: dict
    """After the chunk (or the first of the next episode if it ended): STATE_KEY float32[8], IMAGE_KEY uint8[H,W,3]
    (rgb only), "task" str."""
    rewards: np.ndarray
    """float32[H]: one per control step; 0 after the episode ended inside the chunk."""
    terminated: bool
    truncated: bool
    success: bool
    """Whether the task was successful at any step of this chunk."""
    steps: int
    """Control steps executed (< H when the episode ended inside the chunk)."""
    final_obs: dict | None
    """The last observation of the episode that ended in this chunk (for bootstrapping a truncation), else None."""
    episode: dict | None
    """Statistics of the episode that ended in this chunk: return, length, success (at any step), task, seed."""


class EnvRunner:
    """Owns one `TwinTaskEnv` (num_envs = 1, physx_cpu). Episode seeds come from `seed` unless given to `reset`.
    `robot_uid` and `randomize` as in `make_task_env`."""

    def __init__(self, task_cfg: TaskConfig, domain: str, variation: str, obs_mode: Literal["state", "rgb"],
                 seed: int, robot_uid: str = ROBOT_UID, randomize: bool = False):
        self.env = make_task_env(task_cfg, domain, variation, obs_mode, num_envs=1, sim_backend="physx_cpu",
                                 robot_uid=robot_uid, randomize=randomize)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> dict:
        self.seed = int(self.rng.integers(2**31)) if seed is None else seed
        obs, _ = self.env.reset(seed=self.seed)
        self.episode_return, self.episode_length, self.episode_success = 0.0, 0, False
        return self._convert(obs)

    def step_chunk(self, actions: np.ndarray, render_every_step: bool = False) -> ChunkResult:
        """Execute actions[H, 7]; render only at the chunk end unless `render_every_step` (the per-step baseline)."""
        rewards = np.zeros(len(actions), dtype=np.float32)
        success = terminated = truncated = False
        obs, steps = None, 0
        for h, action in enumerate(actions):
            if h == len(actions) - 1 or render_every_step:
                obs, reward, te, tr, info = self.env.step(action)
            else:
                obs = None
                reward, te, tr, info = self.env.step_without_obs(action)
            rewards[h], steps = float(reward[0]), h + 1
            success |= bool(info["success"][0])
            terminated, truncated = bool(te[0]), bool(tr[0])
            if terminated or truncated:
                break
        self.episode_return += float(rewards.sum())
        self.episode_length += steps
        self.episode_success |= success
        if not (terminated or truncated):
            return ChunkResult(self._convert(obs), rewards, False, False, success, steps, None, None)
        final_obs = self._convert(obs if obs is not None else self.env.get_obs())
        episode = dict(episode_return=self.episode_return, length=self.episode_length, success=self.episode_success,
                       task=self.env.instructions[0], seed=self.seed)
        return ChunkResult(self.reset(), rewards, terminated, truncated, success, steps, final_obs, episode)

    def close(self) -> None:
        self.env.close()

    def _convert(self, obs: dict) -> dict:
        out = {STATE_KEY: obs[STATE_KEY][0].cpu().numpy(), "task": self.env.instructions[0]}
        if IMAGE_KEY in obs:
            out[IMAGE_KEY] = obs[IMAGE_KEY][0].cpu().numpy()
        return out
