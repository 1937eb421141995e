"""Generalised advantage estimation over action chunks (one chunk = one PPO step).

This is the ONE place where termination and truncation are told apart:
  - terminated (the task ended: success or failure): the episode has no future, V(s_{t+1}) is not used;
  - truncated (time limit): the episode would have gone on, so bootstrap from V(final observation);
  - either way the advantage recursion stops at the episode end (the env auto-resets, so the next row of the
    rollout belongs to a new episode).
"""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (advantages [T, N], returns [T, N]).

    rewards [T, N]: reward of chunk t (the sum of its per-step rewards).
    values [T, N]: V(s_t) of the observation chunk t was chosen from.
    terminated, truncated [T, N] bool: how the episode ended during chunk t (both False: it goes on).
    final_values [T, N]: V(final observation) where truncated (read nowhere else; any finite value elsewhere).
    last_value [N]: V(s_T) of the observation after the last chunk.
    """
    T = rewards.shape[0]
    named = (("values", values), ("terminated", terminated), ("truncated", truncated), ("final_values", final_values))
    for name, x in named:
        if x.shape != rewards.shape:
            raise ValueError(f"compute_gae: {name} has shape {tuple(x.shape)}, rewards {tuple(rewards.shape)}")
    if last_value.shape != rewards.shape[1:]:
        raise ValueError(
            f"compute_gae: last_value has shape {tuple(last_value.shape)}, expected {tuple(rewards.shape[1:])}"
        )
    done = terminated | truncated
    # V(s_{t+1}) within the same episode: the next row's value, the final observation's after a truncation, and
    # nothing after a termination.
    next_values = torch.cat([values[1:], last_value[None]], dim=0)
    next_values = torch.where(truncated, final_values, next_values)
    next_values = torch.where(terminated, torch.zeros_like(next_values), next_values)
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(last_value)
    for t in reversed(range(T)):
        not_done = (~done[t]).to(rewards.dtype)
        delta = rewards[t] + gamma * next_values[t] - values[t]  # δ_t = r_t + γ V(s_{t+1}) − V(s_t)
        last_gae = delta + gamma * gae_lambda * not_done * last_gae  # Â_t = δ_t + γλ (1 − d_t) Â_{t+1}
        advantages[t] = last_gae
    returns = advantages + values  # R_t = Â_t + V(s_t), the value target
    return advantages, returns
