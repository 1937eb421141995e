"""One task's whole RL-Co pipeline — demos → encoder pretraining → Stage I → Stage II → eval — per seed, resumable.

    python -m cotrain.experiment out=runs/exp                              # the measured pick_place recipe
    python -m cotrain.experiment seeds=[0,1,2] out=runs/exp                # three runs in sequence
    python -m cotrain.experiment steps=[stage1,eval] eval.n_action_steps=1 out=runs/exp
    python -m cotrain.experiment time_budget_s=560 out=$OUT/exp            # stops in time; the same command goes on

Each run lives in `out/seed_<s>/`: `demos/`, `encoder/`, `stage1/`, `stage2/` (each step's own output and resume
state) and `results.json` (per step: status, wall time summed over calls, key metrics, checkpoint paths, and the
evaluation's per-seed outcomes so that runs can be paired by seed). A step marked done is skipped by a later call;
Stage I and Stage II continue from their checkpoints. The real-proxy is the simulated stand-in for the real world:
its numbers are not real-robot numbers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from cotrain.config import register_schema
from cotrain.pipeline.config import ExperimentConfig
from cotrain.pipeline.record import RunRecord
from cotrain.pipeline.steps import STEP_FUNCTIONS, Run

log = logging.getLogger("cotrain.experiment")
CALL_KEYS = ("steps", "seeds", "time_budget_s", "out")
"""Keys that may change between calls of one run (what to run now, and for how long)."""

register_schema("experiment_schema", ExperimentConfig)


def run_config(cfg: ExperimentConfig) -> dict:
    """The config a run is bound to: everything but the per-call keys."""
    full = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    return {k: v for k, v in full.items() if k not in CALL_KEYS}


def run_seed(cfg: ExperimentConfig, seed: int, deadline: float | None, started: list[str]) -> bool:
    """The listed steps of one run; returns False when the time budget stopped it before the end. `started` lists
    the steps this call has started: the first always starts (every call makes progress, even with no time left:
    Stage II then runs one iteration), later ones only while the budget lasts."""
    run_dir = Path(cfg.out) / f"seed_{seed}"
    record = RunRecord(run_dir, run_config(cfg))
    run = Run(cfg, seed, run_dir, deadline, record.done)
    for step in cfg.ordered_steps:
        if record.done(step):
            log.info("seed %d: %s already done, skipped", seed, step)
            continue
        if run.remaining_s() == 0.0 and started:
            log.info("seed %d: time budget spent before %s; run the same command again to go on", seed, step)
            return False
        log.info("seed %d: %s", seed, step)
        started.append(step)
        with record.timing(step) as entry:
            STEP_FUNCTIONS[step](run, entry)
        if not record.done(step):
            return False
    return True


def run(cfg: ExperimentConfig) -> bool:
    """Every seed's run in sequence; True when all finished their steps."""
    deadline = None if cfg.time_budget_s is None else time.perf_counter() + cfg.time_budget_s
    started: list[str] = []
    return all(run_seed(cfg, seed, deadline, started) for seed in cfg.seeds)


@hydra.main(config_path="../configs", config_name="experiment", version_base="1.3")
def main(cfg) -> None:
    run(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
