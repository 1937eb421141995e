"""Closed-loop evaluation of a policy in a twin task: success rate with a Wilson interval, per variation.

The policy acts in chunks: it observes, returns H actions, the env executes the first `n_action_steps` of them
(all H by default; stopping at the end of the episode), and it observes again — the loop the robot bridge runs with
the same `n_action_steps` parameter. `run_episode` runs one env step by step (videos: `cotrain.eval`);
`evaluate_vec` runs the same loop over a vector env's chunks (Stage II's periodic evaluation, `cotrain.experiment`),
executing the first `n_action_steps` actions of each chunk too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cotrain.data.spec import IMAGE_KEY, STATE_KEY, TASK_KEY
from cotrain.policies.base import Policy
from cotrain.runtime import atomic_path


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (well-behaved at 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    ret: float
    length: int
    instruction: str


@dataclass
class VariationResult:
    variation: str
    success_rate: float
    ci95: tuple[float, float]
    mean_return: float
    episodes: list[EpisodeResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def policy_obs(obs: dict, instructions: list[str], device: torch.device) -> dict:
    """The raw cotrain observation the policy interface takes, from a twin env's observation."""
    return {IMAGE_KEY: obs[IMAGE_KEY].to(device), STATE_KEY: obs[STATE_KEY].to(device).float(), TASK_KEY: list(instructions)}


def actions_per_chunk(n_action_steps: int, chunk_size: int) -> int:
    """How many actions of each chunk are executed: `n_action_steps`, or the whole chunk for 0; refuses the rest."""
    if not 0 <= n_action_steps <= chunk_size:
        raise ValueError(f"n_action_steps must be in [0, {chunk_size}] (the policy's chunk size), got {n_action_steps}")
    return n_action_steps or chunk_size


@torch.no_grad()
def run_episode(env, policy: Policy, seed: int, frames: list | None = None, n_action_steps: int = 0) -> EpisodeResult:
    """One episode in a single env (num_envs = 1), deterministic actions. Appends camera frames to `frames`.

    `n_action_steps`: actions executed from each chunk before the policy observes again (0 = the whole chunk)."""
    execute = actions_per_chunk(n_action_steps, policy.chunk_size)
    device = next(policy.parameters()).device
    obs, _ = env.reset(seed=seed)
    ret, steps = 0.0, 0
    if frames is not None:
        frames.append(obs[IMAGE_KEY][0].cpu().numpy())
    while True:
        actions, _, _, _ = policy.sample(policy_obs(obs, env.instructions, device), explore=False)
        for h in range(execute):
            obs, reward, terminated, truncated, info = env.step(actions[:, h].cpu())
            ret += float(reward[0])
            steps += 1
            if frames is not None:
                frames.append(obs[IMAGE_KEY][0].cpu().numpy())
            if bool(terminated[0]) or bool(truncated[0]):
                success = bool(info["success"][0])
                return EpisodeResult(seed, success, ret, steps, env.instructions[0])


def write_video(frames: list[np.ndarray], path: Path, fps: int = 10) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()


def evaluate_variation(env, policy: Policy, variation: str, seeds: list[int], video_dir: Path | None = None,
                       n_videos: int = 0, progress=None, n_action_steps: int = 0) -> VariationResult:
    episodes = []
    for i, seed in enumerate(seeds):
        frames = [] if (video_dir is not None and i < n_videos) else None
        ep = run_episode(env, policy, seed, frames, n_action_steps)
        episodes.append(ep)
        if frames:
            write_video(frames, video_dir / f"{variation}_seed{seed}_{'success' if ep.success else 'fail'}.mp4")
        if progress is not None:
            progress.update(1)
    wins = sum(e.success for e in episodes)
    return VariationResult(
        variation=variation,
        success_rate=wins / len(episodes),
        ci95=wilson_interval(wins, len(episodes)),
        mean_return=float(np.mean([e.ret for e in episodes])),
        episodes=episodes,
    )


@torch.no_grad()
def evaluate_vec(env, policy: Policy, episodes: int, seed: int, max_episode_steps: int,
                 n_action_steps: int = 0) -> dict:
    """Success over `episodes` episodes of a vector env (deterministic actions); episode i uses seed + i.

    Rounds of N envs: each round resets every env with its seed and steps chunks of `n_action_steps` actions (0: the
    whole chunk, as `run_episode`) until each env of the round has ended its first episode (later episodes of the
    auto-reset are ignored; an episode still running after `max_episode_steps` steps counts as a failure).
    Returns {"success_rate", "ci95", "mean_return", "episodes", "seeds", "successes"}: per-seed outcomes in seed
    order, so two evaluations over the same seeds can be paired."""
    execute = actions_per_chunk(n_action_steps, policy.chunk_size)
    max_chunks = math.ceil(max_episode_steps / execute) + 1
    device = next(policy.parameters()).device
    n, successes, returns = env.num_envs, [], []
    for first in range(0, episodes, n):
        count = min(n, episodes - first)  # the last round's surplus envs run but are not counted
        obs = env.reset(seeds=[seed + first + i for i in range(n)])
        ended, won, ret = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), torch.zeros(n)
        for _ in range(max_chunks):
            actions = policy.sample({k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                                     for k, v in obs.items()}, explore=False)[0]
            obs, reward, terminated, truncated, info = env.step_chunk(actions[:, :execute].float().cpu())
            ret += torch.where(ended, torch.zeros(n), torch.as_tensor(reward).float().sum(1))
            now = (torch.as_tensor(terminated) | torch.as_tensor(truncated)) & ~ended
            won |= now & torch.as_tensor(info["success"]).bool()
            ended |= now
            if bool(ended[:count].all()):
                break
        successes += won[:count].tolist()
        returns += ret[:count].tolist()
    wins = sum(successes)
    return {"success_rate": wins / episodes, "ci95": wilson_interval(wins, episodes),
            "mean_return": float(np.mean(returns)), "episodes": episodes,
            "seeds": [seed + i for i in range(episodes)], "successes": [bool(s) for s in successes]}
