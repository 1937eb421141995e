"""The named steps of one run (one task, one seed) in its run directory, each through the library functions of its
entry point: `cotrain.demos.expert_episodes`, `cotrain.pretrain_encoder.run`, `cotrain.stage1.train`,
`cotrain.stage2.train`, `cotrain.evaluation.evaluate_vec`. Each fills its entry of the run record.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cotrain import checkpoints
from cotrain.pipeline import demo_store
from cotrain.pipeline.config import ExperimentConfig


@dataclasses.dataclass
class Run:
    """One run: the experiment config, its seed and directory, and the call's deadline."""

    cfg: ExperimentConfig
    seed: int
    dir: Path
    deadline: float | None
    """time.perf_counter() value at which this call's time budget is spent (None: no budget)."""
    finished: Callable[[str], bool]
    """Whether a step of this run is done (in this call or an earlier one): the run record's `done`."""

    @functools.cached_property
    def task_cfg(self):
        """The experiment's task mapping as a TaskConfig, parsed once (`cotrain.stage2.parse_task`)."""
        from cotrain.stage2 import parse_task

        return parse_task(self.cfg.task)

    @property
    def chunk_size(self) -> int:
        return int(self.cfg.stage1.policy["chunk_size"])

    def remaining_s(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.perf_counter())

    def demos(self, domain: str):
        return demo_store.load(self.dir / "demos", domain, self.cfg.demos.format, self.chunk_size)

    @property
    def encoder_weights(self) -> Path:
        return self.dir / "encoder" / "image_encoder.safetensors"

    @property
    def stage1_checkpoint(self) -> Path | None:
        """Stage I's latest checkpoint in this run (None before its first save)."""
        return checkpoints.latest(self.dir / "stage1")


def metrics_rows(out: Path) -> list[dict[str, float]]:
    path = out / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def demos(run: Run, entry: dict[str, Any]) -> None:
    from cotrain.demos import Attempts, expert_episodes

    d = run.cfg.demos
    # the sim demos are training data (simulated in the twin domain, randomised around it); the real-proxy plays the
    # real world. Stored by what they are: `sim` (whichever twin domain) and `real_proxy`.
    for kind, domain, n, seed, dart, randomize in (
            ("sim", run.cfg.domain, d.sim, d.sim_seed, d.dart_noise_std, True),
            ("real_proxy", "real_proxy", d.real, d.real_seed, 0.0, False)):
        if n == 0:
            continue
        counts = Attempts()
        episodes = expert_episodes(run.task_cfg, domain, n, seed, workers=d.workers, dart_noise_std=dart,
                                   keep_failures=d.keep_failures, counts=counts, randomize=randomize)
        written = demo_store.write(run.dir / "demos", kind, d.format, episodes)
        entry[kind] = written | {"domain": domain, "attempts": counts.attempts,
                                 "expert_success": round(counts.success_rate, 4),
                                 "path": str(demo_store.path(run.dir / "demos", kind, d.format))}


def encoder(run: Run, entry: dict[str, Any]) -> None:
    from cotrain.pretrain_encoder import run as pretrain

    cfg = dataclasses.replace(run.cfg.encoder, task=dict(run.cfg.task), domain=run.cfg.domain,
                              policy=dict(run.cfg.stage1.policy),
                              out=str(run.dir / "encoder"), seed=run.seed, device=run.cfg.device)
    results = pretrain(cfg)
    entry |= {"weights": str(run.encoder_weights), "heldout_rms": results.get("heldout_rms"),
              "train_rms": results["train_rms"]}


def stage1(run: Run, entry: dict[str, Any]) -> None:
    from cotrain.stage1 import train

    cfg = run.cfg
    resume = run.stage1_checkpoint  # a call cut during Stage I
    init = run.encoder_weights if "encoder" in cfg.steps else None
    if init is not None and not init.exists():
        raise FileNotFoundError(f"experiment: stage1 starts from the pretrained encoder but {init} is missing")
    s1 = dataclasses.replace(cfg.stage1, out=str(run.dir / "stage1"), resume=str(resume) if resume else None,
                             init_weights=str(init) if init else None, seed=run.seed, device=cfg.device,
                             data=dataclasses.replace(cfg.stage1.data, seed=run.seed))
    real = [run.demos("real_proxy")] if cfg.demos.real > 0 else []
    start = time.perf_counter()
    ckpt = train(s1, real=real, sim=[run.demos("sim")])
    rows = metrics_rows(run.dir / "stage1")
    entry |= {"checkpoint": str(ckpt), "steps": s1.steps, "resumed_from": str(resume) if resume else None,
              "steps_per_s_this_call": round(s1.steps / (time.perf_counter() - start), 2) if not resume else None,
              "final_sft_loss": rows[-1].get("train/sft_loss") if rows else None}


def stage2(run: Run, entry: dict[str, Any]) -> None:
    from cotrain.stage2 import train

    cfg = run.cfg
    init = run.stage1_checkpoint
    if init is None:
        raise FileNotFoundError(f"experiment: stage2 starts from Stage I's checkpoint, but {run.dir / 'stage1'} "
                                "has none")
    out = run.dir / "stage2"
    resumed = checkpoints.latest(out) is not None  # a call cut by its time budget
    s2 = dataclasses.replace(cfg.stage2, init=str(init), task=dict(cfg.task), domain=cfg.domain, out=str(out),
                             resume=str(out) if resumed else None, seed=run.seed, device=cfg.device,
                             time_budget_s=run.remaining_s())
    real = run.demos("real_proxy") if cfg.demos.real > 0 else None
    ckpt = train(s2, real_dataset=real)
    rows = metrics_rows(out)
    perf = [r for r in rows if "perf/loop_sps" in r]
    mean = lambda key: round(sum(r[key] for r in perf) / len(perf), 1) if perf else None  # noqa: E731
    evals = [r for r in rows if "eval/real_proxy_success" in r]
    entry |= {"checkpoint": str(ckpt), "iterations_done": checkpoints.step_of(ckpt), "iterations": s2.iterations,
              "env_steps": rows[-1].get("env_steps") if rows else 0.0, "loop_sps": mean("perf/loop_sps"),
              "env_sps": mean("perf/env_sps"), "rollout_success_last": perf[-1]["rollout/success"] if perf else None,
              "periodic_eval": [{k: r[k] for k in r if k.startswith("eval/") or k == "env_steps"} for r in evals]}
    if checkpoints.step_of(ckpt) != s2.iterations:
        entry["status"] = "partial"  # stopped by the time budget: the same command continues


def final_checkpoint(run: Run, stage: str) -> Path:
    """The latest checkpoint of `stage` (a finished step: it has one)."""
    return checkpoints.resolve(run.dir / stage, f"experiment {stage}")


def evaluate(run: Run, entry: dict[str, Any]) -> None:
    """Each listed stage's final checkpoint, once that stage is done, in each domain over the same fresh seeds;
    per-seed outcomes kept. One vector env per domain serves every checkpoint (its workers start once). Finished
    (checkpoint, domain) pairs are kept across calls."""
    from cotrain.envs import make_env
    from cotrain.evaluation import evaluate_vec
    from cotrain.policies import load_policy
    from cotrain.runtime import pick_device

    e, task_cfg = run.cfg.eval, run.task_cfg
    stages = [s for s in e.checkpoints if run.finished(s)]
    for stage in stages:
        entry.setdefault(stage, {"checkpoint": str(final_checkpoint(run, stage))})
    for domain in e.domains:
        pending = [s for s in stages if domain not in entry[s]]
        if not pending:
            continue
        if run.remaining_s() == 0.0:
            entry["status"] = "partial"
            return
        start = time.perf_counter()
        env = make_env(task_cfg, domain, "rgb", num_envs=min(e.envs, e.episodes), seed=0, backend=e.backend)
        entry.setdefault("env_start_s", {})[domain] = round(time.perf_counter() - start, 2)
        try:
            for stage in pending:
                if run.remaining_s() == 0.0:
                    entry["status"] = "partial"
                    return
                start = time.perf_counter()
                policy = load_policy(Path(entry[stage]["checkpoint"]), device=pick_device(run.cfg.device)).eval()
                r = evaluate_vec(env, policy, e.episodes, e.seed, task_cfg.max_episode_steps, e.n_action_steps)
                entry[stage][domain] = r | {"n_action_steps": e.n_action_steps,
                                            "wall_s": round(time.perf_counter() - start, 2)}
                print(f"[eval] {stage} {domain}: {r['success_rate']:.1%} (95% CI {r['ci95'][0]:.1%}-"
                      f"{r['ci95'][1]:.1%}) over {e.episodes} episodes", flush=True)
        finally:
            env.close()


STEP_FUNCTIONS = {"demos": demos, "encoder": encoder, "stage1": stage1, "stage2": stage2, "eval": evaluate}
