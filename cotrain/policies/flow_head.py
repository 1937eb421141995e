"""π0.5-style flow-matching action head, with πRL's two ways of making its sampler stochastic and scored.

The action expert is a small decoder: the noisy chunk x_t (one token per chunk step, mixed with the embedding of
t like π0's action-time MLP) cross-attends to the trunk and predicts the velocity v_θ(x_t, t). The math of the
chain — interpolation, loss, ODE / SDE steps, log-densities — lives in `flow_logprob`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from cotrain.policies import flow_logprob as fl
from cotrain.policies import rng
from cotrain.policies.action_head import ActionHead, Context, HeadShape, Noise, register_head
from cotrain.policies.base import Aux
from cotrain.policies.blocks import KV, Decoder, time_embedding
from cotrain.policies.configuration_vla import FlowHeadConfig


VelocityFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(x_t [B, H, A], t [B]) -> (v_θ(x_t, t) [B, H, A], features [B, H, F] for Flow-Noise's noise network)."""


def _stochastic_step(stochastic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, k): each row's index and its one stochastic step k_b, for indexing [B, K, …] tensors at k_b."""
    return torch.arange(stochastic.shape[0], device=stochastic.device), stochastic.to(torch.int64).argmax(dim=1)


class FlowSDE:
    """Flow-SDE (πRL): one step k ~ U{0, …, K−1} per sample is an SDE step with σ_t = a·√(t/(1−t)); the others are
    ODE steps. Only that step has a density, so scoring needs one velocity call per row."""

    def __init__(self, chain: "FlowChain") -> None:
        self.chain, self.cfg = chain, chain.cfg
        self.stochastic_per_row = 1

    def stochastic_steps(self, batch: int, device: torch.device) -> torch.Tensor:
        """One random stochastic step per sample (a mask built without a host sync)."""
        k = rng.randint(0, self.cfg.num_steps, (batch,), device)
        return torch.arange(self.cfg.num_steps, device=device) == k[:, None]

    def transition(self, x, v, h, t, delta, stochastic):  # noqa: ANN001, ARG002  (h unused by Flow-SDE)
        sigma = fl.flow_sde_sigma(t, self.cfg.sde_noise_level, self.cfg.num_steps)
        sde_mean, std = fl.flow_sde_step(x, v, t, delta, sigma)
        return torch.where(stochastic[:, None, None], sde_mean, fl.ode_step(x, v, delta)), std

    def chain_logprob(self, chain: torch.Tensor, means: torch.Tensor, stds: torch.Tensor,
                      stochastic: torch.Tensor) -> torch.Tensor:
        """`fl.chain_logprob` for exactly one stochastic step per row, summed as `score` sums it."""
        rows, k = _stochastic_step(stochastic)
        return fl.one_step_logprob(chain[rows, k + 1], means[rows, k], stds[rows, k])

    def score(self, velocity: VelocityFn, chain: torch.Tensor, stochastic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Only row b's stochastic step k_b has a density, log N(x_{k_b+1}; μ_{k_b}(x_{k_b}), s²), so one velocity call
        on the rows' own (x_{k_b}, t_{k_b}) scores the whole batch (K times fewer decoder passes in every PPO forward
        than scoring every step and masking)."""
        num_steps = self.cfg.num_steps
        rows, k = _stochastic_step(stochastic)
        x, x_next = chain[rows, k], chain[rows, k + 1]
        t = fl.time_grid(num_steps).to(chain.device, chain.dtype)[k]
        v, h = velocity(x, t)
        mean, std = self.transition(x, v, h, t, 1.0 / num_steps, torch.ones_like(rows, dtype=torch.bool))
        return fl.one_step_logprob(x_next, mean, std), fl.gaussian_entropy(std).flatten(1).sum(dim=1)


class FlowNoise:
    """Flow-Noise (πRL): every step is an ODE step plus learnt Gaussian noise (the chain's noise network); the joint
    log-density of the chain needs the velocity at all K steps."""

    def __init__(self, chain: "FlowChain") -> None:
        self.chain, self.cfg = chain, chain.cfg
        self.stochastic_per_row = chain.cfg.num_steps

    def stochastic_steps(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.ones(batch, self.cfg.num_steps, dtype=torch.bool, device=device)

    def transition(self, x, v, h, t, delta, stochastic):  # noqa: ANN001, ARG002
        return fl.ode_step(x, v, delta), self.chain.noise_std(h)

    def chain_logprob(self, chain: torch.Tensor, means: torch.Tensor, stds: torch.Tensor,
                      stochastic: torch.Tensor) -> torch.Tensor:
        return fl.chain_logprob(chain, means, stds, stochastic)

    def score(self, velocity: VelocityFn, chain: torch.Tensor, stochastic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = [self.chain.step(velocity, chain[:, k].contiguous(), k, stochastic[:, k])
                 for k in range(self.cfg.num_steps)]
        means, stds = torch.stack([m for m, _ in steps], 1), torch.stack([s for _, s in steps], 1)
        return fl.chain_logprob(chain, means, stds, stochastic), fl.chain_entropy(stds, stochastic)


RL_METHODS = {"flow_sde": FlowSDE, "flow_noise": FlowNoise}
"""`FlowHeadConfig.rl_method` → how the chain is made stochastic and scored (mapped once, in FlowChain)."""


class FlowChain(nn.Module):
    """Samples and scores the K-step denoising chain of any flow policy, given its velocity function, with the
    config's method (`RL_METHODS`); owns the Flow-Noise noise network (built for both methods, so a Stage I checkpoint
    serves either)."""

    def __init__(self, cfg: FlowHeadConfig, chunk_size: int, action_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.cfg, self.chunk_shape = cfg, (chunk_size, action_dim)
        self.noise_net = nn.Sequential(nn.Linear(feature_dim, feature_dim // 2), nn.Tanh(),
                                       nn.Linear(feature_dim // 2, action_dim))
        self.method = RL_METHODS[cfg.rl_method](self)

    def noise_std(self, h: torch.Tensor) -> torch.Tensor:
        """Flow-Noise: s = s_min + (s_max − s_min)·sigmoid(net(h)), per chunk step and action dim."""
        lo, hi = self.cfg.noise_std_min, self.cfg.noise_std_max
        return lo + (hi - lo) * torch.sigmoid(self.noise_net(h))

    def step(self, velocity: VelocityFn, x: torch.Tensor, k: int, stochastic_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of x_{k+1} given x_k; the same call in `denoise` and `evaluate`, so they agree bit for bit."""
        t = torch.full((x.shape[0],), float(fl.time_grid(self.cfg.num_steps)[k]), device=x.device, dtype=x.dtype)
        v, h = velocity(x, t)
        return self.method.transition(x, v, h, t, 1.0 / self.cfg.num_steps, stochastic_k)

    def draw_noise(self, batch: int, device: torch.device, explore: bool) -> Noise:
        """The chain's random numbers, drawn before any network runs:
        x0 [B, H, A] the start at t = 1 (explore=False: zeros, or noise with eval_init="noise");
        stochastic bool [B, K] which steps add noise (Flow-SDE: one random step; Flow-Noise: all; explore=False: none);
        eps [B, K, H, A] (explore only) the standard-normal noise of step k, used where step k is stochastic."""
        shape, k = (batch, *self.chunk_shape), self.cfg.num_steps
        if not explore:
            x0 = torch.zeros(shape, device=device) if self.cfg.eval_init == "zero" else rng.randn(shape, device)
            return {"x0": x0, "stochastic": torch.zeros(batch, k, dtype=torch.bool, device=device)}
        x0 = rng.randn(shape, device)
        stochastic = self.method.stochastic_steps(batch, device)
        return {"x0": x0, "stochastic": stochastic, "eps": rng.randn((batch, k, *self.chunk_shape), device)}

    def denoise(self, velocity: VelocityFn, explore: bool, noise: Noise) -> tuple[torch.Tensor, torch.Tensor, Aux]:
        """The K-step chain from `noise` (see `draw_noise`): x_{k+1} = μ_k + s_k·eps_k where step k is stochastic,
        μ_k elsewhere. Deterministic given `noise`. Returns (x_K, logprob [B] (NaN when explore=False: a
        deterministic chain has no density), aux {chain [B, K+1, H, A], stochastic [B, K]})."""
        x, stochastic = noise["x0"], noise["stochastic"]
        chain, means, stds = [x], [], []
        for k in range(self.cfg.num_steps):
            mean, std = self.step(velocity, x, k, stochastic[:, k])
            x = torch.where(stochastic[:, k, None, None], mean + std * noise["eps"][:, k], mean) if explore else mean
            chain.append(x), means.append(mean), stds.append(std)
        chain_t = torch.stack(chain, dim=1)
        if explore:
            logprob = self.method.chain_logprob(chain_t, torch.stack(means, 1), torch.stack(stds, 1), stochastic)
        else:
            logprob = torch.full((x.shape[0],), float("nan"), device=x.device)
        return x, logprob, {"chain": chain_t, "stochastic": stochastic}

    def sample(self, velocity: VelocityFn, batch: int, device: torch.device, explore: bool) -> tuple[torch.Tensor, torch.Tensor, Aux]:
        """Draw the noise and denoise in one call (the LeRobot adapter's entry point)."""
        return self.denoise(velocity, explore, self.draw_noise(batch, device, explore))

    def evaluate(self, velocity: VelocityFn, aux: Aux) -> tuple[torch.Tensor, torch.Tensor]:
        chain, stochastic = aux["chain"], aux["stochastic"]
        expected = (self.cfg.num_steps + 1, *self.chunk_shape)
        if chain.shape[1:] != expected or stochastic.shape[1:] != (self.cfg.num_steps,):
            raise ValueError(f"aux['chain'] {tuple(chain.shape)} / aux['stochastic'] {tuple(stochastic.shape)} do not "
                             f"match this head (chain [B, {', '.join(map(str, expected))}], stochastic [B, {expected[0] - 1}])")
        fewest, most = torch.aminmax(stochastic.sum(dim=1))
        fewest, most = int(fewest), int(most)
        if fewest == 0:
            raise ValueError("aux has rows without a stochastic denoising step: they come from sample(explore=False), "
                             "which has no log-probability")
        per_row = self.method.stochastic_per_row
        if fewest != per_row or most != per_row:
            raise ValueError(f"aux['stochastic'] has {fewest}..{most} stochastic steps per row; this chain "
                             f"({self.cfg.rl_method}) records {per_row}")
        return self.method.score(velocity, chain, stochastic)


@dataclass
class Memory:
    kv: list[KV]
    pad: torch.Tensor | None


@register_head(FlowHeadConfig)
class FlowHead(ActionHead):
    def __init__(self, cfg: FlowHeadConfig, shape: HeadShape) -> None:
        super().__init__()
        self.cfg, self.shape = cfg, shape
        d = shape.d_model
        self.action_in = nn.Linear(shape.action_dim, d)
        self.action_time_mlp = nn.Sequential(nn.Linear(2 * d, d), nn.SiLU(), nn.Linear(d, d))
        self.pos = nn.Parameter(torch.randn(shape.chunk_size, d) * 0.02)
        self.decoder = Decoder(d, shape.n_heads, shape.mlp_ratio, cfg.n_layers)
        self.velocity_out = nn.Linear(d, shape.action_dim)
        self.chain = FlowChain(cfg, shape.chunk_size, shape.action_dim, d)

    def velocity(self, memory: Memory, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_θ(x_t, t) [B, H, A], decoder features [B, H, D]) for x_t [B, H, A] and t [B]."""
        tokens = self.action_in(x_t)
        temb = time_embedding(t, tokens.shape[-1])[:, None, :].expand_as(tokens)
        q = self.action_time_mlp(torch.cat([tokens, temb], dim=-1)) + self.pos
        h = self.decoder(q, memory.kv, memory.pad)
        return self.velocity_out(h), h

    def memory(self, ctx: Context) -> Memory:
        """The trunk tokens' keys/values for every decoder layer, computed once for all K steps."""
        return Memory(self.decoder.memory_kv(ctx.tokens), ctx.pad_mask)

    def sft_loss(self, ctx: Context, actions_n: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        noise = rng.randn_like(actions_n)
        t = fl.sample_time(actions_n.shape[0], device=actions_n.device)
        v, _ = self.velocity(self.memory(ctx), fl.interpolate(actions_n, noise, t), t)
        return fl.flow_matching_loss(v, noise, actions_n, is_pad)

    def draw_noise(self, batch: int, device: torch.device, explore: bool) -> Noise:
        return self.chain.draw_noise(batch, device, explore)

    def sample(self, ctx: Context, explore: bool, noise: Noise) -> tuple[torch.Tensor, torch.Tensor, Aux]:
        return self.chain.denoise(partial(self.velocity, self.memory(ctx)), explore, noise)

    def evaluate(self, ctx: Context, aux: Aux) -> tuple[torch.Tensor, torch.Tensor]:
        return self.chain.evaluate(partial(self.velocity, self.memory(ctx)), aux)
