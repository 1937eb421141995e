"""Stage II (RL-Co): PPO in the twin over action chunks, anchored by β·SFT on real data in the same backward pass.

    python -m cotrain.stage2 init=runs/stage1 task=pick_place real=[datasets/real_proxy/pick_place] \
        rl.beta=0.2 envs=16 iterations=200 out=runs/stage2
    torchrun --nproc-per-node 2 -m cotrain.stage2 ...                  # DDP, each rank owns `envs` workers
    python -m cotrain.stage2 ... resume=runs/stage2                     # continues from its latest checkpoint
    python -m cotrain.stage2 ... time_budget_s=500                      # stops with a checkpoint; rerun with resume

Reads top to bottom: config → policy → real data → envs → loop (rollout, update, eval, checkpoint); `train` wires
`build` (the parts), `Evaluator` (both domains through `cotrain.evaluation`) and `iteration_row` (the metrics).
Writes out/ckpt/step_N (N = iteration: policy checkpoint + trainer_rank{r}.pt), out/ckpt/LATEST (`cotrain.checkpoints`),
out/metrics.csv,
out/success.png (success vs env steps in sim and real-proxy) and an offline wandb run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import hydra
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from tqdm import tqdm

from cotrain import checkpoints
from cotrain.config import register_schema
from cotrain.data import FeatureSpec, FrameWeights, load_dataset
from cotrain.errors import check_choice
from cotrain.evaluation import evaluate_vec
from cotrain.metrics import MetricsLogger, WandbConfig
from cotrain.policies import load_policy, save_checkpoint
from cotrain.rl import PPOTrainer, RealBatchStream, RLConfig, all_reduce_sum, init_distributed
from cotrain.rl.anchor import frame_weights
from cotrain.rl.distributed import DistInfo, gathered, savable_policy
from cotrain.rl.pipeline import RolloutPipeline
from cotrain.rl.rollout import RolloutStats
from cotrain.runtime import atomic_path

log = logging.getLogger("cotrain.stage2")
REAL_PROXY = "real_proxy"
EnvBackend = Literal["physx_cpu", "physx_cpu_serial", "physx_cuda"]
"""Values of `backend` (`cotrain.envs.make_env`'s)."""


@dataclass
class Stage2Config:
    init: str | None = None
    """Stage I checkpoint to start from: a checkpoint directory or a Stage I run (its latest); ignored when resuming."""
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    """Policy config keys to change on the `init` checkpoint's config for Stage II, e.g. {value_detach: true} or
    {head: {rl_method: flow_noise}} (`load_policy`'s overrides; a resumed run keeps the config it saved)."""
    task: dict[str, Any] = field(default_factory=dict)
    """Task config (configs/task/*.yaml), parsed once with the config into `task_config` (`TaskConfig`, strict)."""
    real: list[str] = field(default_factory=list)
    """Real datasets for the anchor (robot recordings, or the real-proxy stand-in). Required when rl.beta > 0 unless
    `train` is given the real data in memory."""
    real_frames: FrameWeights = field(default_factory=FrameWeights)
    """Weight of each frame of `real` by its source (demo, intervention, policy; `cotrain.data.frame_source`): 0
    leaves those frames out of the anchor; the default anchors on the human's frames (HG-DAgger)."""
    rl: RLConfig = field(default_factory=RLConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    domain: str = "sim"
    """Twin domain of the training rollouts (a domain of `task`): `sim`, or the calibrated `twin` that
    `python -m cotrain.calibrate` writes; never the real-proxy. Evaluation runs in this domain and the real-proxy."""
    envs: int = 16
    """Env worker processes per rank (training rollouts in `domain`)."""
    backend: str = "physx_cpu"  # EnvBackend (checked in __post_init__)
    """physx_cpu (one process per env), physx_cpu_serial (in-process, tests), physx_cuda (unverified)."""
    iterations: int = 100
    """PPO iterations (rollout + update)."""
    eval_every: int = 10
    """Evaluate in sim and real-proxy every this many iterations (and before the first, and after the last)."""
    eval_episodes: int = 32
    """Episodes per domain per evaluation (0: no evaluation)."""
    eval_n_action_steps: int = 0
    """Actions executed from each chunk before the policy observes again in the evaluation (`cotrain.eval`'s
    n_action_steps; 0 = the whole chunk). Training rollouts always execute whole chunks."""
    save_every: int = 10
    """Checkpoint period in iterations (the last iteration is always saved)."""
    time_budget_s: float | None = None
    """Wall-clock seconds this call may train (a machine with a time limit): the iteration that would end past it
    (judged by the longest iteration so far) is the last; the run saves a checkpoint and returns before `iterations`,
    and the same command with resume=<out> goes on exactly from there. 0: one iteration. None: no limit."""
    out: str = "runs/stage2"
    resume: str | None = None
    """A Stage II run directory (its latest checkpoint) or one of its ckpt/step_N directories."""
    device: str = "auto"
    """auto | cpu | cuda (cuda:LOCAL_RANK under torchrun)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.time_budget_s is not None and self.time_budget_s < 0:
            raise ValueError(f"stage2: time_budget_s must be >= 0 or null, got {self.time_budget_s}")
        check_choice(self.backend, EnvBackend, "stage2.backend")
        self._task_config = parse_task(self.task) if self.task else None
        if self.domain == REAL_PROXY:
            raise ValueError(f"stage2: domain={REAL_PROXY} trains in the real world's stand-in; train in a twin domain")
        if self._task_config is not None and self.domain not in self._task_config.domains:
            raise ValueError(f"stage2: domain={self.domain!r} is not a domain of task {self._task_config.task!r} "
                             f"(known: {sorted(self._task_config.domains)})")

    @property
    def eval_domains(self) -> tuple[str, str]:
        """The training domain and the real-proxy."""
        return self.domain, REAL_PROXY

    @property
    def task_config(self):
        """The `task` mapping as a TaskConfig (parsed when the config was)."""
        if self._task_config is None:
            raise ValueError("stage2: task=<name> (configs/task) is required")
        return self._task_config


def parse_task(task: dict[str, Any]):
    """A task mapping (configs/task/*.yaml, or Hydra's) as a TaskConfig, checked key by key (`cotrain.envs.config`)."""
    from cotrain.envs.config import TaskConfig

    return TaskConfig.from_dict(dict(task), source=f"configs/task/{task.get('task')}.yaml")


register_schema("stage2_schema", Stage2Config)


def resolve_resume(path: str) -> Path:
    """The Stage II checkpoint `resume=path` means (`cotrain.checkpoints.resolve`); it must hold the trainer state."""
    ckpt = checkpoints.resolve(path, "resume")
    if not (ckpt / "trainer_rank0.pt").exists():
        raise FileNotFoundError(f"resume={path}: {ckpt} holds no trainer_rank0.pt (not a Stage II checkpoint)")
    return ckpt


def save(out: Path, iteration: int, policy, trainer: PPOTrainer, rank: int, world: int, cfg_yaml: str) -> None:
    """Policy checkpoint (rank 0) + each rank's trainer state; LATEST moves only once every rank has saved."""
    ckpt = checkpoints.step_dir(out, iteration)
    to_save = savable_policy(policy, rank)  # every rank: fsdp2 gathers the weights to rank 0
    if rank == 0:
        save_checkpoint(ckpt, to_save, step=iteration, extra={"run_config": cfg_yaml})
    if world > 1:
        dist.barrier()
    with atomic_path(ckpt / f"trainer_rank{rank}.pt") as tmp:
        torch.save(trainer.state_dict(), tmp)
    if world > 1:
        dist.barrier()
    if rank == 0:
        checkpoints.mark_latest(out, iteration)


@dataclass
class Parts:
    """What `build` makes for one rank: the policy, the training envs, the rollout pipeline and the trainer."""

    info: DistInfo
    task_cfg: Any
    policy: Any
    env: Any
    rollouts: RolloutPipeline
    trainer: PPOTrainer
    resumed: bool


def build(cfg: Stage2Config, real_dataset: torch.utils.data.Dataset | None) -> Parts:
    """Policy (from Stage I or this run's latest checkpoint), real data for the anchor, envs, pipeline and trainer."""
    from cotrain.envs import make_env

    if cfg.init is None and cfg.resume is None:
        raise ValueError("stage2: give init=<Stage I checkpoint> (or resume=<Stage II run>)")
    if cfg.rl.beta > 0 and not cfg.real and real_dataset is None:
        raise ValueError(f"stage2: rl.beta={cfg.rl.beta} > 0 needs real=[<dataset>, ...] for the anchor")
    info = init_distributed(cfg.device)
    torch.manual_seed(cfg.seed + info.rank)
    spec = FeatureSpec()
    task_cfg = cfg.task_config

    resume = resolve_resume(cfg.resume) if cfg.resume else None
    sharded = cfg.rl.data_parallel == "fsdp2" and info.world_size > 1  # shards move to the GPU in PPOTrainer
    policy = load_policy(resume or checkpoints.resolve(cfg.init, "init"), expected_spec=spec, device="cpu" if sharded else info.device,
                         overrides=None if resume else OmegaConf.to_container(OmegaConf.create(cfg.policy_overrides)))

    # real data for the anchor: a fresh batch per PPO micro-batch
    weights = None
    if cfg.real and real_dataset is None:
        parts = [load_dataset(r, spec, policy.chunk_size, cfg.real_frames) for r in cfg.real]
        real_dataset, weights = torch.utils.data.ConcatDataset(parts), frame_weights(parts)
    real = None
    if real_dataset is not None:
        real = RealBatchStream(real_dataset, cfg.rl.real_batch_size, seed=cfg.seed * 1000 + info.rank, weights=weights)

    # each rank owns its workers; rollouts in the twin domain, each episode in a domain drawn from the task's randomization
    # (rl.overlap_update: rollout k+1 during update k)
    env = make_env(task_cfg, cfg.domain, "rgb", num_envs=cfg.envs, seed=cfg.seed * 1000 + info.rank, backend=cfg.backend,
                   randomize=True)
    rollouts = RolloutPipeline(env, policy, cfg.rl, rank=info.rank)
    trainer = PPOTrainer(policy, cfg.rl, real, info)
    if resume:
        trainer.load_state_dict(torch.load(resume / f"trainer_rank{info.rank}.pt", weights_only=False))
        log.info("resumed from %s at iteration %d", resume, trainer.iteration)
    return Parts(info, task_cfg, policy, env, rollouts, trainer, resume is not None)


class Evaluator:
    """Stage II's periodic evaluation in sim and the real-proxy (`cotrain.evaluation.evaluate_vec`, rank 0); its
    vector envs are built on first use and kept."""

    def __init__(self, cfg: Stage2Config, task_cfg, info: DistInfo):
        self.cfg, self.task_cfg, self.info = cfg, task_cfg, info
        self.envs: dict[str, Any] = {}

    def __call__(self, policy, iteration: int, env_steps: float) -> dict[str, float]:
        from cotrain.envs import make_env

        cfg, row = self.cfg, {"env_steps": env_steps}
        with gathered(policy):  # every rank (fsdp2: one all-gather); rank 0 then samples without collectives
            if self.info.is_main and cfg.eval_episodes > 0:
                policy.eval()
                for d in cfg.eval_domains:
                    if d not in self.envs:
                        self.envs[d] = make_env(self.task_cfg, d, "rgb", num_envs=min(cfg.envs, cfg.eval_episodes),
                                                seed=10_000, backend=cfg.backend, randomize=False)
                    r = evaluate_vec(self.envs[d], policy, cfg.eval_episodes, seed=1_000_000,
                                     max_episode_steps=self.task_cfg.max_episode_steps,
                                     n_action_steps=cfg.eval_n_action_steps)
                    row[f"eval/{d}_success"] = r["success_rate"]
                    log.info("iteration %d: %s success %.1f%% (95%% CI %.1f-%.1f%%)", iteration, d,
                             100 * r["success_rate"], 100 * r["ci95"][0], 100 * r["ci95"][1])
                policy.train()
        if self.info.world_size > 1:
            dist.barrier()
        return row

    def close(self) -> None:
        for e in self.envs.values():
            e.close()


def iteration_row(update: dict[str, float], stats: RolloutStats, wall_s: float, env_steps_before: float,
                  info: DistInfo) -> dict[str, float]:
    """One iteration's metrics over all ranks; "env_steps" is the run's total after this iteration."""
    roll = all_reduce_sum(asdict(stats) | {"wall_s": wall_s}, info)
    world = info.world_size
    return {f"train/{k}": v for k, v in update.items()} | {
        "env_steps": env_steps_before + roll["env_steps"],
        "rollout/success": roll["successes"] / max(roll["episodes"], 1),
        "rollout/return": roll["episode_return_sum"] / max(roll["episodes"], 1),
        # env-steps/s over all ranks: the whole loop (iteration wall time; the rollout may have run during the
        # previous update), the raw vector env (time inside env stepping), the rollout alone (its wall time)
        "perf/loop_sps": roll["env_steps"] / (roll["wall_s"] / world),
        "perf/env_sps": roll["env_steps"] / (roll["env_s"] / world),
        "perf/rollout_sps": roll["env_steps"] / (roll["collect_s"] / world),
    }


def last_in_budget(cfg: Stage2Config, start: float, iteration_s: float, info: DistInfo) -> bool:
    """Whether the iteration about to start should be this call's last: cfg.time_budget_s would be spent by the end
    of another iteration as long as the longest so far (all ranks agree: any rank's verdict stops every rank)."""
    if cfg.time_budget_s is None:
        return False
    late = float(time.perf_counter() - start + iteration_s >= cfg.time_budget_s)
    return all_reduce_sum({"late": late}, info)["late"] > 0


def drains_before(cfg: Stage2Config, it: int) -> bool:
    """Whether the pipeline drains before iteration `it`: checkpoints and evaluations see no rollout in flight (so a
    resume is exact)."""
    evaluates = cfg.eval_episodes > 0 and it % cfg.eval_every == 0
    return evaluates or it % cfg.save_every == 0 or it >= cfg.iterations


def open_metrics(cfg: Stage2Config, parts: Parts) -> tuple[MetricsLogger | None, float]:
    """Rank 0's metrics log (continued when resuming; None on other ranks) and the env steps the run has done."""
    if not parts.info.is_main:
        return None, 0.0
    metrics = MetricsLogger(Path(cfg.out), cfg.wandb, OmegaConf.to_container(OmegaConf.structured(cfg)),
                            resume=parts.resumed)
    return metrics, metrics.rows[-1].get("env_steps", 0.0) if metrics.rows else 0.0


def close(parts: Parts, evaluate: Evaluator, metrics: MetricsLogger | None) -> None:
    """The run's curves (rank 0), then every env and worker closed."""
    if metrics is not None:
        metrics.plot([f"eval/{d}_success" for d in evaluate.cfg.eval_domains], x_key="env_steps", name="success",
                     ylabel="success rate (real_proxy = simulated stand-in for real)")
        metrics.plot(["train/pg_loss", "train/v_loss", "train/sft_loss"], name="losses", ylabel="loss")
        metrics.close()
    parts.rollouts.close()
    parts.env.close()
    evaluate.close()


def train(cfg: Stage2Config, real_dataset: torch.utils.data.Dataset | None = None) -> Path:
    """Run Stage II (until cfg.iterations, or cfg.time_budget_s); return the last checkpoint saved.
    `real_dataset` (in memory, e.g. demos generated by `cotrain.experiment`) replaces `cfg.real`."""
    start = time.perf_counter()
    parts = build(cfg, real_dataset)
    info, policy, trainer, rollouts = parts.info, parts.policy, parts.trainer, parts.rollouts
    out = Path(cfg.out)
    evaluate = Evaluator(cfg, parts.task_cfg, info)
    cfg_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    metrics, env_steps = open_metrics(cfg, parts)
    if trainer.iteration == 0:
        row0 = evaluate(policy, 0, env_steps)  # every rank: evaluate() holds a barrier (and fsdp2's all-gather)
        if metrics is not None:
            metrics.log(0, row0)
    bar = tqdm(range(trainer.iteration, cfg.iterations), initial=trainer.iteration, total=cfg.iterations,
               desc="stage2", disable=not info.is_main, dynamic_ncols=True)

    last_update_end = None  # set while a rollout runs in the background: the next iteration's wall time starts there
    saved, iteration_s = None, 0.0
    for _ in bar:
        t0 = time.perf_counter()
        final = last_in_budget(cfg, start, iteration_s, info)  # then drain: the checkpoint resumes exactly
        buffer, stats = rollouts.rollout(trainer.iteration,
                                         prefetch_next=not (final or drains_before(cfg, trainer.iteration + 1)))
        update = trainer.update(buffer)
        t1 = time.perf_counter()
        wall = t1 - (last_update_end or t0)  # evaluation and checkpoints (after a drain) are not loop time
        iteration_s = max(iteration_s, t1 - t0)
        last_update_end = t1 if rollouts.pending is not None else None
        it = trainer.iteration
        row = iteration_row(update, stats, wall, env_steps, info)
        env_steps = row["env_steps"]
        stop = final and it < cfg.iterations
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            row |= evaluate(policy, it, env_steps)
        if metrics is not None:
            metrics.log(it, row)
            bar.set_postfix(success=f"{row['rollout/success']:.2f}", sps=f"{row['perf/loop_sps']:.0f}")
        if it % cfg.save_every == 0 or it == cfg.iterations or stop:
            save(out, it, policy, trainer, info.rank, info.world_size, cfg_yaml)
            saved = it
        if stop:
            log.info("time budget of %.0f s spent after iteration %d of %d: stopped (resume=%s goes on)",
                     cfg.time_budget_s, it, cfg.iterations, out)
            break
    close(parts, evaluate, metrics)
    return checkpoints.step_dir(out, saved if saved is not None else trainer.iteration)


@hydra.main(config_path="../configs", config_name="stage2", version_base="1.3")
def main(cfg) -> None:
    train(OmegaConf.to_object(cfg))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
