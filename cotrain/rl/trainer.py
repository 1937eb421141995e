"""PPO update with the real-data anchor: epochs x minibatches x micro-batches, one backward per micro-batch.

    GAE over the rollout's record (gae.py), the whole batch moved to the policy's device once, then
    for each epoch: shuffle the rollout; for each minibatch: zero grads, for each micro-batch:
        draw a fresh real batch; one DDP forward (evaluate + sft_loss); loss (one line); one backward
    then clip the global grad norm and step AdamW (value head at its own lr)
    — unless rl.target_kl is set and the minibatch's approximate KL exceeds it: then the update ends there.

Decoupled PPO (Hilton et al. 2021), so a rollout may lag the learner (rl.overlap_update: sampled by the weights
from before the previous update; `RolloutBuffer.policy_lag`): before the first step of a lagged rollout, `evaluate`
re-scores it under the current weights (the proximal policy π_prox) over the first epoch's micro-batches, so the first
forward repeats it exactly and the ratio π_θ/π_prox is exactly 1 before any step. The surrogate is weighted by
min(π_prox/π_behav, rl.behav_weight_cap). A rollout sampled by the current weights has π_prox = π_behav: its
recorded log-probs serve as both (no re-scoring pass; `initial_ratio_dev` then shows the kernel rounding between the
rollout's and the update's batch sizes).
Critic warm-up (rl.critic_warmup_iterations): the same loss and backward, but only the value head steps — every
other parameter's gradient is dropped before the clip and the step (AdamW skips a parameter without a gradient: no
moment update, no weight decay).
Randomness: the learner's CPU draws (image shifts) come from torch's global RNG, which it alone uses — a rollout,
even one running in another thread, samples from its own generators (rollout.RNGStream) — its accelerator draws (the
anchor's flow-matching noise and times) from the trainer's own device generator, and the minibatch order from the
trainer's CPU generator; all are in `state_dict`. The device generator is not torch's default one because a CUDA
graph capture in the rollout thread (policies/cuda_graph.py) claims the default generator while it records, and a
draw from it in another thread then fails ("Offset increment outside graph capture").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch

from cotrain.policies.base import Policy
from cotrain.policies.checkpoint import apply_rng, capture_rng
from cotrain.policies.rng import draw_from
from cotrain.rl.config import RLConfig
from cotrain.rl.distributed import (
    DistInfo, all_reduce_mean, clip_grad_norm, grad_sync, load_local_optimizer_state, local_optimizer_state, wrap_step,
)
from cotrain.rl.ppo_loss import behaviour_weight, explained_variance, normalize_advantages, policy_loss, value_loss
from cotrain.rl.gae import compute_gae
from cotrain.rl.rollout import Batch, RolloutBuffer

RealBatches = Iterator[dict[str, Any]]


def rollout_gae(buffer: RolloutBuffer, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) [T, N] of a full rollout: `compute_gae` on what the collector recorded."""
    if not buffer.full:
        raise RuntimeError(f"rollout has {buffer.step} of {buffer.num_steps} steps; finish it before computing returns")
    return compute_gae(buffer.rewards, buffer.values, buffer.terminated, buffer.truncated, buffer.final_values,
                       buffer.last_value, gamma, gae_lambda)


def training_batch(buffer: RolloutBuffer, cfg: RLConfig, device: torch.device | None = None) -> Batch:
    """The flat PPO batch of a rollout (advantages and returns by GAE), on `device` when given."""
    batch = buffer.flatten(*rollout_gae(buffer, cfg.gamma, cfg.gae_lambda))
    return batch if device is None else batch.to(device)


def make_optimizer(policy: Policy, cfg: RLConfig) -> torch.optim.AdamW:
    """AdamW with two groups: the value head (`rl.value_param_prefix`) at rl.value_lr, the rest at rl.lr."""
    value_params, policy_params = [], []
    for name, p in policy.named_parameters():
        if p.requires_grad:
            (value_params if name.startswith(cfg.value_param_prefix) else policy_params).append(p)
    if not value_params or not policy_params:
        names = [n for n, _ in policy.named_parameters()][:8]
        raise ValueError(
            f"rl.value_param_prefix={cfg.value_param_prefix!r} must split {type(policy).__name__}'s trainable "
            f"parameters into a value head and the rest; got {len(value_params)} value and {len(policy_params)} "
            f"other parameters (first names: {names})"
        )
    groups = [
        {"params": policy_params, "lr": cfg.lr, "name": "policy"},
        {"params": value_params, "lr": cfg.value_lr, "name": "value"},
    ]
    return torch.optim.AdamW(groups, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)


class PPOTrainer:
    """Owns the optimizer, the DDP step module and the update; the caller owns rollouts, eval and checkpoints."""

    def __init__(self, policy: Policy, cfg: RLConfig, real_batches: RealBatches | None, dist: DistInfo = DistInfo()):
        if cfg.beta > 0 and real_batches is None:
            raise ValueError(
                f"rl.beta={cfg.beta} needs real batches for the anchor; pass real_batches or set rl.beta=0"
            )
        self.policy, self.cfg, self.real_batches, self.dist = policy, cfg, real_batches, dist
        self.step_module = wrap_step(policy, dist, cfg.ddp_find_unused_parameters, cfg.data_parallel)
        self.optimizer = make_optimizer(policy, cfg)
        seed, device = cfg.seed * 7919 + dist.rank, self.device
        self.generator = torch.Generator().manual_seed(seed)
        self.device_generator = torch.Generator(device).manual_seed(seed) if device.type != "cpu" else None
        """The learner's accelerator draws (see the module docstring); None on CPU (global RNG, as before)."""
        self.iteration = 0
        """Completed updates."""

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def backward_micro_batch(self, mb: Batch, loss_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Forward, loss and ONE backward for a micro-batch (+ a fresh real batch); returns the terms backpropagated."""
        cfg, dev = self.cfg, self.device
        real_batch = next(self.real_batches) if self.real_batches is not None else None
        aux = {k: v.to(dev) for k, v in mb.aux.items()}
        new_logprob, entropy, new_value, sft = self.step_module(mb.obs, aux, real_batch, cfg.beta > 0)
        behav_logprob = mb.logprobs.to(dev)
        prox_logprob = behav_logprob if mb.prox_logprobs is None else mb.prox_logprobs.to(dev)  # None: no lag
        weight = behaviour_weight(prox_logprob, behav_logprob, cfg.behav_weight_cap)  # 1 without lag
        pg_loss, ratio = policy_loss(new_logprob, prox_logprob, mb.advantages.to(dev), cfg.clip_coef, weight)
        v_loss = value_loss(new_value, mb.values.to(dev), mb.returns.to(dev), cfg.vf_clip_coef, cfg.huber_delta)
        entropy = entropy.mean()
        sft_loss = sft if sft is not None else torch.zeros((), device=dev)
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy + cfg.beta * sft_loss
        (loss * loss_scale).backward()
        terms = {"loss": loss, "pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy, "behav_weight": weight.mean()}
        if sft is not None:
            terms["sft_loss"] = sft_loss
        terms |= {"approx_kl": ratio.approx_kl, "clipfrac": ratio.clipfrac, "ratio_dev": ratio.ratio_dev}
        return {k: v.detach() for k, v in terms.items()}

    def minibatches(self, perm: torch.Tensor) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
        """One epoch's minibatches: (rows of the batch, its micro-batches as positions within the minibatch)."""
        for mb_index in torch.tensor_split(perm, self.cfg.num_minibatches):
            yield mb_index, torch.tensor_split(torch.arange(len(mb_index)), self.cfg.micro_batches)

    @torch.no_grad()
    def proximal_logprobs(self, batch: Batch, perm: torch.Tensor) -> torch.Tensor:
        """log π_prox: `evaluate` under the current weights, over the micro-batches the first epoch will use."""
        prox = torch.empty_like(batch.logprobs)
        for mb_index, micros in self.minibatches(perm):
            for micro_index in micros:
                index = mb_index[micro_index]
                rows = batch.rows(index)
                logprob = self.policy.evaluate(rows.obs, {k: v.to(self.device) for k, v in rows.aux.items()})[0]
                prox[index] = logprob.to(prox.device, prox.dtype)
        return prox

    @property
    def warming_up(self) -> bool:
        """Critic warm-up: this update steps only the value head (see the module docstring)."""
        return self.iteration < self.cfg.critic_warmup_iterations

    def drop_actor_grads(self) -> None:
        """Critic warm-up: forget every gradient outside the value head, so only the value head steps."""
        for group in self.optimizer.param_groups:
            if group["name"] == "policy":
                for p in group["params"]:
                    p.grad = None

    def kl_exceeded(self, approx_kl: torch.Tensor) -> bool:
        """rl.target_kl: whether this minibatch's approximate KL (mean over ranks, so all ranks agree) is above it."""
        if self.cfg.target_kl is None:
            return False
        return all_reduce_mean({"kl": float(approx_kl)}, self.dist)["kl"] > self.cfg.target_kl

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        """PPO epochs over one rollout; returns metrics averaged over micro-batches and reduced over ranks."""
        with draw_from(None, self.device_generator):  # CPU draws: torch's global RNG; device draws: our own
            return self._update(buffer)

    def _update(self, buffer: RolloutBuffer) -> dict[str, float]:
        cfg = self.cfg
        batch = training_batch(buffer, cfg, self.device)  # one host-to-device copy per update
        n_mb, n_micro = cfg.num_minibatches, cfg.micro_batches
        if len(batch) < n_mb * n_micro:
            raise ValueError(
                f"rollout has {len(batch)} chunks on rank {self.dist.rank}, fewer than "
                f"rl.num_minibatches*rl.micro_batches = {n_mb}*{n_micro}"
            )
        perms = [torch.randperm(len(batch), generator=self.generator) for _ in range(cfg.update_epochs)]
        lagged = buffer.policy_lag > 0
        batch.prox_logprobs = self.proximal_logprobs(batch, perms[0]) if lagged else batch.logprobs
        behav_ratio_dev = ((batch.prox_logprobs - batch.logprobs).exp() - 1).abs().max()  # 0 without lag
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        grad_norms, n_terms, n_steps = [], 0, 0
        initial_ratio_dev = torch.tensor(float("nan"))
        for mb_index, micros in (mb for perm in perms for mb in self.minibatches(perm)):  # epochs x minibatches
            mb = batch.rows(mb_index)
            if cfg.norm_adv:
                mb.advantages = normalize_advantages(mb.advantages)
            self.optimizer.zero_grad(set_to_none=True)
            mb_kl = torch.zeros((), device=self.device)
            for k, micro_index in enumerate(micros):
                with grad_sync(self.step_module, sync=k == n_micro - 1):
                    terms = self.backward_micro_batch(mb.rows(micro_index), loss_scale=1.0 / n_micro)
                if n_steps == 0 and k == 0:
                    initial_ratio_dev = terms["ratio_dev"]  # before any update: must be 0
                for name, value in terms.items():
                    sums[name] += value  # tensors: no device sync per micro-batch
                n_terms += 1
                mb_kl += terms["approx_kl"] / n_micro
            if self.kl_exceeded(mb_kl):
                break
            if self.warming_up:
                self.drop_actor_grads()
            grad_norms.append(clip_grad_norm(self.policy.parameters(), cfg.max_grad_norm))
            self.optimizer.step()
            n_steps += 1
        self.iteration += 1
        metrics = {k: float(v) / n_terms for k, v in sums.items() if k != "ratio_dev"}
        metrics["grad_norm"] = float(torch.stack(grad_norms).mean()) if grad_norms else 0.0  # before clipping
        metrics["update_steps"] = float(n_steps)
        metrics["initial_ratio_dev"] = float(initial_ratio_dev)
        metrics["behav_ratio_dev"] = float(behav_ratio_dev)
        metrics["explained_variance"] = explained_variance(batch.values, batch.returns)
        return all_reduce_mean(metrics, self.dist)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the policy weights needed to resume exactly (per rank: RNG streams differ by rank)."""
        real = self.real_batches
        return {
            "iteration": self.iteration,
            "optimizer": local_optimizer_state(self.optimizer),  # fsdp2: this rank's shards
            "generator": self.generator.get_state(),
            "device_generator": self.device_generator.get_state() if self.device_generator is not None else None,
            "rng": capture_rng(),
            "real_batches": real.state_dict() if hasattr(real, "state_dict") else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        load_local_optimizer_state(self.optimizer, state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.device_generator is not None and state.get("device_generator") is not None:
            self.device_generator.set_state(state["device_generator"])
        if state["rng"]["cuda"] and not torch.cuda.is_available():
            raise RuntimeError("resume: the checkpoint holds CUDA RNG state but CUDA is not available")
        apply_rng(state["rng"])
        if state["real_batches"] is not None:
            if not hasattr(self.real_batches, "load_state_dict"):
                raise ValueError("resume: the checkpoint holds real-batch stream state but real_batches cannot load it")
            self.real_batches.load_state_dict(state["real_batches"])  # type: ignore[union-attr]
