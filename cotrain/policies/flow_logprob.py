"""Flow matching and the πRL log-probabilities of a flow policy's denoising chain, as pure functions.

Convention (π0 / openpi, Flow-GRPO): t runs from 1 (pure noise ε) to 0 (the action chunk A),
    x_t = t·ε + (1 − t)·A,        velocity target u = ε − A,        integrated with K Euler steps of size δ = 1/K.
The chain is x_0 = ε (at t = 1), x_1, …, x_K (at t = 0, the action); step k goes from t_k = 1 − k·δ to t_k − δ.

πRL (Chen et al. 2025, "πRL: online RL fine-tuning for flow-based VLA models") scores a chain two ways:
- Flow-SDE: the ODE is turned into an SDE with the same marginals (Flow-GRPO, Liu et al. 2025, eq. 9–12),
      dx = [v + σ_t²/(2t)·(x + (1 − t)·v)] dt + σ_t dW,        σ_t = a·√(t / (1 − t)),
  discretised with dt = −δ; one step per rollout is stochastic, the others follow the ODE. Log-prob = that
  step's Gaussian transition density.
- Flow-Noise: every step is the ODE step plus Gaussian noise whose std a learnable network predicts;
  log-prob = joint density of the whole chain = Σ_k log N(x_{k+1}; μ_k, s_k²).
All densities are over the normalised action space (the env action is a fixed map of x_K), summed over the
chunk's H×A dimensions.
"""

from __future__ import annotations

import math

import torch

from cotrain.policies import rng

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def time_grid(num_steps: int) -> torch.Tensor:
    """[t_0 = 1, t_1, …, t_K = 0]: K + 1 points, δ = 1/K apart."""
    return torch.linspace(1.0, 0.0, num_steps + 1)


def sample_time(batch: int, device: torch.device | None = None) -> torch.Tensor:
    """π0's training-time distribution: t = 0.999·Beta(1.5, 1) + 0.001 (more weight on the noisy end)."""
    u = rng.rand((batch,), device)  # the thread's generator inside rng.draw_from
    t = u ** (1 / 1.5)  # Beta(1.5, 1) by inverse CDF: F(t) = t^1.5
    return 0.999 * t + 0.001


def interpolate(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t·ε + (1 − t)·A, with t [B] broadcast over the chunk."""
    t = t.view(-1, *([1] * (actions.dim() - 1)))
    return t * noise + (1 - t) * actions


def flow_matching_loss(v_pred: torch.Tensor, noise: torch.Tensor, actions: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    """L = E ||v_θ(x_t, t) − (ε − A)||², averaged over the non-padded steps of the chunk and the action dims."""
    per_step = ((v_pred - (noise - actions)) ** 2).mean(dim=-1)  # [B, H]
    valid = (~is_pad).to(per_step.dtype)
    return (per_step * valid).sum() / valid.sum().clamp_min(1.0)


def ode_step(x_t: torch.Tensor, v_t: torch.Tensor, delta: float) -> torch.Tensor:
    """Euler step of dx/dt = v towards t = 0:  x_{t−δ} = x_t − δ·v_t."""
    return x_t - delta * v_t


def flow_sde_sigma(t: torch.Tensor, a: float, num_steps: int) -> torch.Tensor:
    """σ_t = a·√(t / (1 − t)).

    At t = 1 the ratio is infinite; like Flow-GRPO and RLinf, 1 − t is then replaced by 1 − t_1 (t_1 = 1 − δ, the
    next grid point), i.e. σ_1 = a·√(1/δ).
    """
    t_next_of_one = 1.0 - 1.0 / num_steps
    denom = 1 - torch.where(t >= 1.0, torch.full_like(t, t_next_of_one), t)
    return a * torch.sqrt(t / denom)


def flow_sde_step(x_t: torch.Tensor, v_t: torch.Tensor, t: torch.Tensor, delta: float, sigma_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler–Maruyama step of the Flow-SDE (dt = −δ); returns (mean, std) of x_{t−δ}:
        x_{t−δ} = x_t − [v_t + σ_t²/(2t)·(x_t + (1 − t)·v_t)]·δ + σ_t·√δ·ε.
    t and σ_t are [B] (broadcast over the chunk)."""
    shape = (-1, *([1] * (x_t.dim() - 1)))
    t, sigma_t = t.view(shape), sigma_t.view(shape)
    mean = x_t - (v_t + sigma_t**2 / (2 * t) * (x_t + (1 - t) * v_t)) * delta
    std = (sigma_t * math.sqrt(delta)).expand_as(mean)
    return mean, std


def gaussian_logprob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; μ, s²) = −(x − μ)²/(2s²) − log s − ½·log 2π."""
    return -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - LOG_SQRT_2PI


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """Elementwise H[N(μ, s²)] = ½ + ½·log 2π + log s."""
    return 0.5 + LOG_SQRT_2PI + torch.log(std)


def chain_logprob(chain: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, stochastic: torch.Tensor) -> torch.Tensor:
    """log p(chain) = Σ_k [step k stochastic] · Σ_dims log N(x_{k+1}; μ_k, s_k²).

    chain [B, K+1, H, A]; means, stds [B, K, H, A]; stochastic bool [B, K]. Deterministic steps contribute nothing
    (their std is replaced by 1 before the log so that no inf/NaN reaches the gradient through `where`)."""
    mask = stochastic.view(*stochastic.shape, 1, 1).expand_as(means)
    safe_std = torch.where(mask, stds, torch.ones_like(stds))
    logp = gaussian_logprob(chain[:, 1:], means, safe_std)
    return torch.where(mask, logp, torch.zeros_like(logp)).flatten(1).sum(dim=1)


def chain_entropy(stds: torch.Tensor, stochastic: torch.Tensor) -> torch.Tensor:
    """Σ over the stochastic steps and dims of the Gaussian transition entropies (a constant of θ for Flow-SDE)."""
    mask = stochastic.view(*stochastic.shape, 1, 1).expand_as(stds)
    ent = gaussian_entropy(torch.where(mask, stds, torch.ones_like(stds)))
    return torch.where(mask, ent, torch.zeros_like(ent)).flatten(1).sum(dim=1)


def one_step_logprob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Flow-SDE's chain log-prob, whose only stochastic transition is row b's step k_b:
    log p(chain_b) = Σ_dims log N(x_{k_b+1}; μ_{k_b}, s_{k_b}²). All arguments [B, H, A], already taken at k_b
    (sampling and scoring both sum it this way, so their results agree bit for bit)."""
    return gaussian_logprob(x_next, mean, std).flatten(1).sum(dim=1)
