"""Stage I: supervised warm start on a mixture of real and simulated demonstrations (real fraction α per batch).

    python -m cotrain.stage1 policy=vla_flow data.real=[datasets/real_proxy/pick_place] \
        data.sim=[datasets/sim/pick_place] data.alpha=0.2 steps=2000 out=runs/stage1
    python -m cotrain.stage1 ... resume=runs/stage1/ckpt/last      # continues exactly

Reads top to bottom: config → data → policy → loop. Writes `out/ckpt/{step_N,last}` (policy checkpoints with
optimizer and RNG state), `out/metrics.csv`, `out/loss.png` and an offline wandb run.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from cotrain.config import register_schema
from cotrain.data import ChunkDataset, FeatureSpec, Mixture, load_dataset
from cotrain.data.config import DataConfig
from cotrain.ema import EMA
from cotrain.metrics import MetricsLogger, WandbConfig
from cotrain.policies import (load_partial_weights, load_policy, load_training_state, make_policy,
                              partial_weight_names, policy_config_from_dict, save_checkpoint)
from cotrain.runtime import pick_device, seed_everything, to_device

log = logging.getLogger("cotrain.stage1")


@dataclass
class Stage1Config:
    policy: dict[str, Any] = field(default_factory=dict)
    """Policy config (configs/policy/*.yaml), validated by `policy_config_from_dict`."""
    data: DataConfig = field(default_factory=DataConfig)
    """Real and sim datasets and the real fraction α."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    steps: int = 2000
    """Optimizer steps (one mixture batch each)."""
    lr: float = 3e-4
    """AdamW learning rate (cosine-decayed to 10% over `steps`, after `warmup_steps`)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up."""
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    """Max global gradient norm."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights (`cotrain.ema`, warm-up ramp included); checkpoints
    hold the average as the policy's weights (what eval, Stage II and the bridge load) and the trained weights in
    the training state. 0 = no average: checkpoints hold the trained weights."""
    log_every: int = 25
    save_every: int = 500
    """Checkpoint period in steps (the last step is always saved)."""
    out: str = "runs/stage1"
    """Run directory."""
    resume: str | None = None
    """A checkpoint of this run to continue from (weights, optimizer, RNG, step)."""
    init_weights: str | None = None
    """A safetensors file of some of the policy's weights to start from instead of their random initialisation
    (`load_partial_weights`; e.g. a pretrained image encoder). Not used on resume (the checkpoint holds them)."""
    init_lr_scale: float = 1.0
    """Learning-rate multiplier of the weights loaded by `init_weights` (0 freezes them; 1 trains them like the rest),
    e.g. to keep what a pretrained image encoder learnt from being worn away by the demos."""
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init_lr_scale < 0:
            raise ValueError(f"stage1: init_lr_scale must be ≥ 0, got {self.init_lr_scale}")
        if self.init_lr_scale != 1.0 and not self.init_weights:
            raise ValueError("stage1: init_lr_scale scales the weights loaded by init_weights; set init_weights")


register_schema("stage1_schema", Stage1Config)


def lr_at(step: int, cfg: Stage1Config) -> float:
    """Linear warm-up, then cosine decay from lr to 0.1·lr at the last step."""
    import math

    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save(out: Path, policy, optimizer: torch.optim.Optimizer, ema: EMA | None, step: int, cfg_yaml: str) -> None:
    """`out/ckpt/step_N` and `out/ckpt/last`: the averaged weights as the policy, the trained ones for resuming."""
    extra: dict[str, Any] = {"run_config": cfg_yaml}
    with ema.swapped_in(policy) if ema is not None else contextlib.nullcontext() as online:
        if ema is not None:
            extra |= {"online_weights": online, "ema_updates": ema.updates}
        for name in (f"step_{step}", "last"):
            save_checkpoint(out / "ckpt" / name, policy, optimizer=optimizer, step=step, extra=extra)


def sft_step(policy, optimizer: torch.optim.Optimizer, ema: EMA | None, batch: dict, grad_clip: float,
             step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One Stage I update on a device batch: SFT loss, backward, global-norm clip, AdamW step, EMA update.
    Returns (loss, grad_norm) as device tensors; a non-finite loss raises before any weight changes."""
    loss = policy.sft_loss(batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"stage1: non-finite SFT loss {loss.item()} at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
    optimizer.step()
    if ema is not None:
        ema.update(policy)
    return loss, grad_norm


def param_groups(policy: torch.nn.Module, cfg: Stage1Config) -> list[dict]:
    """AdamW groups, each with its `lr_scale`: everything at 1, and with `init_lr_scale` ≠ 1 the weights named in
    `init_weights` in a second group (rebuilt the same way on resume, so the optimizer state fits)."""
    named = list(policy.named_parameters())
    if cfg.init_lr_scale == 1.0:
        return [{"params": [p for _, p in named], "lr_scale": 1.0}]
    loaded = set(partial_weight_names(cfg.init_weights))
    return [{"params": [p for n, p in named if n not in loaded], "lr_scale": 1.0},
            {"params": [p for n, p in named if n in loaded], "lr_scale": cfg.init_lr_scale}]


def train(cfg: Stage1Config, real: list[ChunkDataset] | None = None, sim: list[ChunkDataset] | None = None) -> Path:
    """Run Stage I; return the path of the last checkpoint.

    `real` / `sim` replace the datasets named in `cfg.data` (experiments that generate demos in memory)."""
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    spec = FeatureSpec()
    policy_cfg = policy_config_from_dict(dict(cfg.policy), where="policy")

    # data: the α mixture; statistics of the mixture travel with the checkpoint
    if real is None:
        real = [load_dataset(root, spec, policy_cfg.chunk_size) for root in cfg.data.real]
    if sim is None:
        sim = [load_dataset(root, spec, policy_cfg.chunk_size) for root in cfg.data.sim]
    mixture = Mixture(real, sim, cfg.data.alpha, cfg.data.batch_size, seed=cfg.data.seed)
    log.info("data: %d real frames, %d sim frames, alpha=%.2f", sum(map(len, real)), sum(map(len, sim)), cfg.data.alpha)

    # policy and optimizer (a resumed run rebuilds both from its checkpoint)
    if cfg.resume:
        policy = load_policy(cfg.resume, expected_spec=spec, device=device)
    else:
        policy = make_policy(policy_cfg, spec, mixture.norm_stats().stats).to(device)
        if cfg.init_weights:
            copied = load_partial_weights(policy, cfg.init_weights)
            log.info("init weights: %d tensors from %s", copied, cfg.init_weights)
    optimizer = torch.optim.AdamW(param_groups(policy, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")  # one kernel for the whole update on CUDA
    ema = EMA(policy, cfg.ema_decay) if cfg.ema_decay > 0 else None  # from a checkpoint: its weights are the average
    start = 0
    if cfg.resume:
        state = load_training_state(cfg.resume, optimizer)
        start = state.step
        if ema is not None:
            if "online_weights" not in state.extra:
                raise ValueError(f"resume={cfg.resume}: saved without an EMA (ema_decay=0); resume with ema_decay=0")
            policy.load_state_dict(state.extra["online_weights"])
            ema.updates = int(state.extra["ema_updates"])
        log.info("resumed from %s at step %d", cfg.resume, start)
    n_params = sum(p.numel() for p in policy.parameters())
    log.info("policy %s: %.2fM parameters on %s", type(policy).__name__, n_params / 1e6, device)

    run_config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    metrics = MetricsLogger(out, cfg.wandb, run_config, resume=bool(cfg.resume))
    policy.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="stage1", dynamic_ncols=True)
    last = out / "ckpt" / "last"
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg) * group["lr_scale"]
        batch = to_device(mixture.batch(step), device)
        loss, grad_norm = sft_step(policy, optimizer, ema, batch, cfg.grad_clip, step)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            metrics.log(done, {"train/sft_loss": loss.item(), "train/grad_norm": grad_norm.item(),
                               "train/lr": optimizer.param_groups[0]["lr"],
                               "train/real_fraction": batch["is_real"].float().mean().item()})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if done % cfg.save_every == 0 or done == cfg.steps:
            save(out, policy, optimizer, ema, done, OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    metrics.plot("train/sft_loss", name="loss", ylabel="SFT loss", logy=True)
    metrics.close()
    log.info("stage1 done: %s", last)
    return last


@hydra.main(config_path="../configs", config_name="stage1", version_base="1.3")
def main(cfg) -> None:
    train(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
