"""Stage I: supervised warm start on a mixture of real and simulated demonstrations (real fraction α per batch).

    python -m cotrain.stage1 policy=vla_flow data.real=[datasets/real_proxy/pick_place] \
        data.sim=[datasets/sim/pick_place] data.alpha=0.2 steps=2000 out=runs/stage1
    python -m cotrain.stage1 ... resume=runs/stage1                # continues exactly from its latest checkpoint
    python -m cotrain.stage1 ... fast=true                         # device batches, one CUDA-graph replay per step
    python -m cotrain.stage1 ... fast=true seeds=[0,1,2,3]         # four runs in one process: out/seed_<s>/

Reads top to bottom: config → data → policy → loop (`plain_loop`, or `fast_loop` over `cotrain.graphed_step`).
Writes `out/ckpt/step_N` (policy checkpoints with optimizer and RNG state) and `out/ckpt/LATEST` (`cotrain.checkpoints`),
`out/metrics.csv`, `out/loss.png` and an offline wandb run.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from cotrain import checkpoints
from cotrain.config import register_schema
from cotrain.data import ACTION_KEY, ChunkDataset, FeatureSpec, Mixture, load_dataset
from cotrain.data.config import DataConfig
from cotrain.data.device_batches import DeviceBatches
from cotrain.ema import EMA
from cotrain.graphed_step import GraphedStep, Run, capturable_adamw, require_tensor_loss
from cotrain.metrics import MetricsLogger, WandbConfig
from cotrain.policies import (load_partial_weights, load_policy, load_training_state, make_policy,
                              partial_weight_names, policy_config_from_dict, save_checkpoint)
from cotrain.policies.tokenizer import encode_tasks
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
    """A checkpoint of this run to continue from (weights, optimizer, RNG, step): the run directory (its latest
    checkpoint) or one of its `ckpt/step_N` directories."""
    init_weights: str | None = None
    """A safetensors file of some of the policy's weights to start from instead of their random initialisation
    (`load_partial_weights`; e.g. a pretrained image encoder). Not used on resume (the checkpoint holds them)."""
    init_lr_scale: float = 1.0
    """Learning-rate multiplier of the weights loaded by `init_weights` (0 freezes them; 1 trains them like the rest),
    e.g. to keep what a pretrained image encoder learnt from being worn away by the demos."""
    micro_batches: int = 1
    """Gradient accumulation: each step's batch is split into this many parts by rows, one forward and backward
    each, then one optimizer step — the full batch's update with the activation memory of one part (plain path only)."""
    device: str = "auto"
    seed: int = 0
    fast: bool = False
    """The on-device, graph-captured step (`cotrain.graphed_step`): the demos uploaded once, batches gathered on the
    device, the whole update (loss, backward, clip, AdamW, EMA) one CUDA-graph replay per step (eager on CPU). The
    same batches, loss, schedule, average and checkpoints as the plain path; its random numbers (image shifts, state
    noise, flow noise) come from the run's own generator, so a fast and a plain run of one seed draw different,
    equally distributed noise. Small VLA only."""
    seeds: list[int] | None = None
    """Train one run per seed in one process (needs fast; `train_seeds`): the run of seed s is the run `seed: s`
    would train alone, written to `out/seed_<s>/`. With `resume`, it names the `out` of the interrupted call and each
    run continues from the latest checkpoint of its `seed_<s>`."""

    def __post_init__(self) -> None:
        if self.init_lr_scale < 0:
            raise ValueError(f"stage1: init_lr_scale must be ≥ 0, got {self.init_lr_scale}")
        if self.init_lr_scale != 1.0 and not self.init_weights:
            raise ValueError("stage1: init_lr_scale scales the weights loaded by init_weights; set init_weights")
        if self.micro_batches < 1:
            raise ValueError(f"stage1: micro_batches must be ≥ 1, got {self.micro_batches}")
        if self.micro_batches > 1 and self.fast:
            raise ValueError(f"stage1: micro_batches={self.micro_batches} needs the plain path; the fast (graphed) "
                             "step takes the whole batch at once: set fast=false or micro_batches=1")
        if self.seeds is not None:
            if not self.fast:
                raise ValueError(f"stage1: seeds={self.seeds} trains the runs together on the fast path; set fast=true")
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"stage1: seeds must be a non-empty list of distinct seeds, got {self.seeds}")


register_schema("stage1_schema", Stage1Config)


def lr_at(step: int, cfg: Stage1Config) -> float:
    """Linear warm-up, then cosine decay from lr to 0.1·lr at the last step."""
    import math

    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save(out: Path, policy, optimizer: torch.optim.Optimizer, ema: EMA | None, step: int, cfg_yaml: str,
         more: dict[str, Any] | None = None) -> None:
    """`out/ckpt/step_N`, then LATEST pointed at it: the averaged weights as the policy, the trained ones for resuming
    (`more`: further training state, e.g. the fast path's generator)."""
    extra: dict[str, Any] = {"run_config": cfg_yaml} | (more or {})
    with ema.swapped_in(policy) if ema is not None else contextlib.nullcontext() as online:
        if ema is not None:
            extra |= {"online_weights": online, "ema_updates": ema.updates}
        save_checkpoint(checkpoints.step_dir(out, step), policy, optimizer=optimizer, step=step, extra=extra)
    checkpoints.mark_latest(out, step)


def sft_step(policy, optimizer: torch.optim.Optimizer, ema: EMA | None, batch: dict, grad_clip: float,
             step: int, micro_batches: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One Stage I update on a device batch: SFT loss, backward, global-norm clip, AdamW step, EMA update.
    With micro_batches = m the batch's rows are split into m contiguous parts, each part's loss backpropagated with
    the weight rows/B: the accumulated gradient is the full batch's (exactly for a loss that is a mean over rows; a
    mean over unpadded steps differs by the parts' shares of padded steps), with one part's activations. Returns (loss,
    grad_norm) as device tensors; a non-finite loss raises before any weight changes."""
    n = len(batch[ACTION_KEY])
    if micro_batches > n:
        raise ValueError(f"stage1: micro_batches={micro_batches} is more than the batch's {n} rows")
    optimizer.zero_grad(set_to_none=True)
    loss = torch.zeros((), device=batch[ACTION_KEY].device)
    for rows in torch.arange(n).tensor_split(micro_batches):
        part = batch if micro_batches == 1 else {k: v[int(rows[0]) : int(rows[-1]) + 1] for k, v in batch.items()}
        part_loss = policy.sft_loss(part) * (len(rows) / n)  # L = Σ_parts (rows/B) · L_part
        if not torch.isfinite(part_loss):
            raise FloatingPointError(f"stage1: non-finite SFT loss {part_loss.item()} at step {step}")
        part_loss.backward()
        loss = loss + part_loss.detach()
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


@dataclass
class Trainee:
    """One run of a Stage I call: its config (seed, out, resume), policy, optimizer, average and first step."""

    cfg: Stage1Config
    policy: Any
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    start: int
    extra: dict[str, Any]
    """The resumed checkpoint's training-state extra (empty for a fresh run)."""
    metrics: MetricsLogger

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def save(self, step: int, more: dict[str, Any] | None = None) -> None:
        save(self.out, self.policy, self.optimizer, self.ema, step, OmegaConf.to_yaml(OmegaConf.structured(self.cfg)),
             more)

    def finish(self) -> Path:
        self.metrics.plot("train/sft_loss", name="loss", ylabel="SFT loss", logy=True)
        self.metrics.close()
        ckpt = checkpoints.latest(self.out)
        log.info("stage1 done: %s", ckpt)
        return ckpt


def load_mixture(cfg: Stage1Config, chunk_size: int, real: list[ChunkDataset] | None,
                 sim: list[ChunkDataset] | None) -> Mixture:
    """The α mixture of `real` / `sim`, or of the datasets named in `cfg.data`."""
    spec = FeatureSpec()
    if real is None:
        real = [load_dataset(root, spec, chunk_size, cfg.data.frames) for root in cfg.data.real]
    if sim is None:
        sim = [load_dataset(root, spec, chunk_size, cfg.data.frames) for root in cfg.data.sim]
    log.info("data: %d real frames, %d sim frames, alpha=%.2f", sum(map(len, real)), sum(map(len, sim)), cfg.data.alpha)
    return Mixture(real, sim, cfg.data.alpha, cfg.data.batch_size, seed=cfg.data.seed)


def build_trainee(cfg: Stage1Config, mixture: Mixture, device: torch.device) -> Trainee:
    """Policy, optimizer and average from the seed, or (resume) from the checkpoint; statistics of the mixture
    travel with the checkpoint."""
    seed_everything(cfg.seed)
    spec = FeatureSpec()
    resume = checkpoints.resolve(cfg.resume, "resume") if cfg.resume else None
    if resume:
        policy = load_policy(resume, expected_spec=spec, device=device)
    else:
        policy_cfg = policy_config_from_dict(dict(cfg.policy), where="policy")
        policy = make_policy(policy_cfg, spec, mixture.norm_stats().stats).to(device)
        if cfg.init_weights:
            copied = load_partial_weights(policy, cfg.init_weights)
            log.info("init weights: %d tensors from %s", copied, cfg.init_weights)
    groups = param_groups(policy, cfg)
    optimizer = (capturable_adamw(groups, cfg.weight_decay, device) if cfg.fast else
                 torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   fused=device.type == "cuda"))  # one kernel for the whole update on CUDA
    ema = EMA(policy, cfg.ema_decay) if cfg.ema_decay > 0 else None  # from a checkpoint: its weights are the average
    start, extra = 0, {}
    if resume:
        state = load_training_state(resume, optimizer, restore_rng=not cfg.fast)
        start, extra = state.step, state.extra
        if ema is not None:
            if "online_weights" not in extra:
                raise ValueError(f"resume={cfg.resume}: saved without an EMA (ema_decay=0); resume with ema_decay=0")
            policy.load_state_dict(extra["online_weights"])
            ema.updates = int(extra["ema_updates"])
        log.info("resumed from %s at step %d", resume, start)
    n_params = sum(p.numel() for p in policy.parameters())
    log.info("policy %s: %.2fM parameters on %s", type(policy).__name__, n_params / 1e6, device)
    run_config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    metrics = MetricsLogger(cfg.out, cfg.wandb, run_config, resume=bool(cfg.resume))
    policy.train()
    return Trainee(cfg, policy, optimizer, ema, start, extra, metrics)


def due(done: int, every: int, cfg: Stage1Config) -> bool:
    return done % every == 0 or done == cfg.steps


def progress(cfg: Stage1Config, start: int) -> tqdm:
    return tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="stage1", dynamic_ncols=True)


def plain_loop(cfg: Stage1Config, t: Trainee, mixture: Mixture, device: torch.device) -> None:
    """Batches drawn on the host, one eager `sft_step` each."""
    bar = progress(cfg, t.start)
    for step in bar:
        for group in t.optimizer.param_groups:
            group["lr"] = lr_at(step, cfg) * group["lr_scale"]
        batch = to_device(mixture.batch(step), device)
        loss, grad_norm = sft_step(t.policy, t.optimizer, t.ema, batch, cfg.grad_clip, step, cfg.micro_batches)
        done = step + 1
        if due(done, cfg.log_every, cfg):
            t.metrics.log(done, {"train/sft_loss": loss.item(), "train/grad_norm": grad_norm.item(),
                                 "train/lr": t.optimizer.param_groups[0]["lr"],
                                 "train/real_fraction": batch["is_real"].float().mean().item()})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if due(done, cfg.save_every, cfg):
            t.save(done)


def run_generator(t: Trainee, device: torch.device) -> torch.Generator:
    """The fast path's generator of a run: restored from its checkpoint, or seeded from (seed, 1) (not `seed` itself,
    whose stream the weight initialisation drew from)."""
    gen = torch.Generator(device)
    if "sft_generator" in t.extra:
        gen.set_state(t.extra["sft_generator"])
    else:
        if t.start > 0:
            log.info("%s: the checkpoint holds no fast-path generator; seeding it from (seed, step)", t.cfg.resume)
        gen.manual_seed(int(np.random.SeedSequence([t.cfg.seed, 1, t.start]).generate_state(1)[0]))
    return gen


def fast_loop(cfg: Stage1Config, trainees: list[Trainee], mixture: Mixture, device: torch.device) -> None:
    """Every run's step as one graph replay on device batches (`cotrain.graphed_step`)."""
    start = trainees[0].start
    if any(t.start != start for t in trainees):
        raise ValueError(f"stage1: the runs resume from different steps {[t.start for t in trainees]}; "
                         "resume each from the same step")
    if start >= cfg.steps:
        return
    first = trainees[0].policy
    require_tensor_loss(first)
    data = DeviceBatches(mixture, start, cfg.steps, device,
                         tokenize=lambda tasks: encode_tasks(tasks, first.config.max_text_tokens)[0])
    runs = [Run(t.policy, t.optimizer, t.ema, run_generator(t, device), lr_table(t.optimizer, cfg, start, device))
            for t in trainees]
    engine = GraphedStep(runs, data, grad_clip=cfg.grad_clip, image_shift=first.config.image_shift,
                         has_pad=bool(first.text_encoder.patch_padding(data.task_ids.cpu()).any()), start=start)
    names = [str(t.out) for t in trainees]
    bar = progress(cfg, start)
    for step in bar:
        engine.step()
        done = step + 1
        if due(done, cfg.log_every, cfg):
            engine.check_finite(names)
            for t, r in zip(trainees, runs):
                t.metrics.log(done, {"train/sft_loss": r.loss.item(), "train/grad_norm": r.grad_norm.item(),
                                     "train/lr": r.lr[0].item(), "train/real_fraction": engine.real_fraction.item()})
            bar.set_postfix(loss=f"{runs[0].loss.item():.4f}")
        if due(done, cfg.save_every, cfg):
            engine.check_finite(names)
            engine.sync_counts()
            for t, r in zip(trainees, runs):
                t.save(done, {"sft_generator": r.generator.get_state()})


def lr_table(optimizer: torch.optim.Optimizer, cfg: Stage1Config, start: int, device: torch.device) -> torch.Tensor:
    """float32 [steps − start, groups]: `lr_at(step) · lr_scale` of each group (what the plain loop sets)."""
    scales = [g["lr_scale"] for g in optimizer.param_groups]
    rows = [[lr_at(k, cfg) * s for s in scales] for k in range(start, cfg.steps)]
    return torch.tensor(rows, dtype=torch.float64).to(device=device, dtype=torch.float32)


def train(cfg: Stage1Config, real: list[ChunkDataset] | None = None, sim: list[ChunkDataset] | None = None) -> Path:
    """Run Stage I; return the path of the last checkpoint.

    `real` / `sim` replace the datasets named in `cfg.data` (experiments that generate demos in memory)."""
    if cfg.seeds is not None:
        raise ValueError(f"stage1: seeds={cfg.seeds} trains several runs; call train_seeds")
    device = pick_device(cfg.device)
    chunk_size = policy_config_from_dict(dict(cfg.policy), where="policy").chunk_size
    mixture = load_mixture(cfg, chunk_size, real, sim)
    trainee = build_trainee(cfg, mixture, device)
    if cfg.fast:
        fast_loop(cfg, [trainee], mixture, device)
    else:
        plain_loop(cfg, trainee, mixture, device)
    return trainee.finish()


def seed_config(cfg: Stage1Config, seed: int) -> Stage1Config:
    """The single-run config of `seed` inside a `seeds` call (its own out; its own checkpoint to resume from)."""
    out = Path(cfg.out) / f"seed_{seed}"
    resume = str(Path(cfg.resume) / f"seed_{seed}") if cfg.resume else None
    return replace(cfg, seed=seed, seeds=None, out=str(out), resume=resume)


def train_seeds(cfg: Stage1Config, real: list[ChunkDataset] | None = None,
                sim: list[ChunkDataset] | None = None) -> list[Path]:
    """Train one run per seed of `cfg.seeds` in one process, together (one graph replay per step for all);
    return their last checkpoints, in the order of `cfg.seeds`. Run s equals `train(cfg with seed s)` on the fast path."""
    if cfg.seeds is None:
        raise ValueError("stage1: train_seeds needs seeds (a list of seeds)")
    device = pick_device(cfg.device)
    chunk_size = policy_config_from_dict(dict(cfg.policy), where="policy").chunk_size
    mixture = load_mixture(cfg, chunk_size, real, sim)
    trainees = [build_trainee(seed_config(cfg, s), mixture, device) for s in cfg.seeds]
    fast_loop(cfg, trainees, mixture, device)
    return [t.finish() for t in trainees]

@hydra.main(config_path="../configs", config_name="stage1", version_base="1.3")
def main(cfg) -> None:
    cfg = OmegaConf.to_object(cfg)
    train_seeds(cfg) if cfg.seeds is not None else train(cfg)


if __name__ == "__main__":
    main()
