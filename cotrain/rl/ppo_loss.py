"""PPO's loss terms as pure functions of tensors (Schulman et al. 2017; CleanRL's names)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RatioStats:
    approx_kl: torch.Tensor
    """k3 estimate of KL(π_old || π_θ): E[(r − 1) − log r] (Schulman, "Approximating KL divergence", 2020)."""
    clipfrac: torch.Tensor
    """Fraction of samples whose ratio lies outside [1 − ε, 1 + ε]."""
    ratio_dev: torch.Tensor
    """max |r − 1|: exactly 0 before the first update when `evaluate` re-scores `sample` faithfully."""


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Â ← (Â − mean Â) / (std Â + eps). A single sample is only centred (its std is undefined)."""
    if advantages.numel() < 2:
        return advantages - advantages.mean()
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def behaviour_weight(prox_logprob: torch.Tensor, behav_logprob: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Decoupled PPO's importance weight w = min(π_prox(a|s) / π_behav(a|s), c̄) (Hilton et al. 2021, truncated as
    V-trace's ρ̄): corrects for actions sampled by older weights (π_behav) than the update starts from (π_prox)."""
    weight = (prox_logprob - behav_logprob).exp()
    return weight if cap is None else weight.clamp(max=cap)


def policy_loss(
    new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor, clip_coef: float,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, RatioStats]:
    """Clipped surrogate: pg_loss = −E[w·min(r·Â, clip(r, 1−ε, 1+ε)·Â)], r = π_θ(a|s) / π_old(a|s).

    PPO: π_old is the rollout's policy and w = 1. Decoupled PPO: π_old is the proximal policy (the weights the
    update started from) and w = `behaviour_weight(...)`; the two coincide when the rollout used those weights.
    """
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()  # r_t(θ) = exp(log π_θ − log π_old)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2)  # −min(a, b) = max(−a, −b)
    pg_loss = (pg_loss if weight is None else weight * pg_loss).mean()
    with torch.no_grad():
        stats = RatioStats(
            approx_kl=((ratio - 1) - logratio).mean(),
            clipfrac=((ratio - 1).abs() > clip_coef).float().mean(),
            ratio_dev=(ratio - 1).abs().max(),
        )
    return pg_loss, stats


def value_loss(
    new_value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    vf_clip_coef: float | None,
    huber_delta: float,
) -> torch.Tensor:
    """Huber value loss, pessimistically clipped around the rollout's value (PPO2 / CleanRL `clip_vloss`).

    v_loss = E[max(h(V_θ − R), h(V_old + clip(V_θ − V_old, −c, c) − R))], h = Huber with δ
    (h(x) = x²/2 for |x| ≤ δ, else δ(|x| − δ/2)).
    """
    v_loss_unclipped = F.huber_loss(new_value, returns, reduction="none", delta=huber_delta)
    if vf_clip_coef is None:
        return v_loss_unclipped.mean()
    v_clipped = old_value + torch.clamp(new_value - old_value, -vf_clip_coef, vf_clip_coef)
    v_loss_clipped = F.huber_loss(v_clipped, returns, reduction="none", delta=huber_delta)
    return torch.max(v_loss_unclipped, v_loss_clipped).mean()


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 − Var[R − V] / Var[R]: 1 perfect, 0 no better than a constant, < 0 worse; nan when Var[R] = 0."""
    var_returns = returns.var()
    if var_returns == 0:
        return float("nan")
    return float(1 - (returns - values).var() / var_returns)
