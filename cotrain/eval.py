"""Evaluate a checkpoint in a twin task: success rate (95 % Wilson interval) per variation, videos, JSON.

    python -m cotrain.eval ckpt=runs/stage1 task=pick_place domain=real_proxy episodes=50
    python -m cotrain.eval ckpt=… task=pick_place domain=sim variations=[train,heldout] videos=3

`domain=real_proxy` is the simulated stand-in for the real world, not a real robot.
Writes `<out>/results.json` and `<out>/videos/*.mp4`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import OmegaConf
from tqdm import tqdm

from cotrain import checkpoints
from cotrain.config import register_schema
from cotrain.data import FeatureSpec
from cotrain.evaluation import actions_per_chunk, evaluate_variation
from cotrain.policies import load_policy
from cotrain.runtime import pick_device, seed_everything, write_json_atomic

log = logging.getLogger("cotrain.eval")


@dataclass
class EvalConfig:
    ckpt: str = "???"
    """Checkpoint directory, or a training run (its latest checkpoint: `cotrain.checkpoints`)."""
    task: dict[str, Any] = field(default_factory=dict)
    """Task config (configs/task/*.yaml)."""
    domain: str = "sim"
    """sim or real_proxy."""
    variations: list[str] = field(default_factory=lambda: ["train"])
    """Variations of the task config to evaluate, each on its own seeds."""
    episodes: int = 20
    """Episodes per variation."""
    seed: int = 1000
    """First evaluation seed (episode i uses seed + i); keep it away from the demo seeds."""
    videos: int = 2
    """MP4 videos per variation (the first episodes)."""
    n_action_steps: int = 0
    """Actions executed from each predicted chunk before the policy observes again; 0 = the whole chunk (H).
    The robot bridge's parameter of the same name; fewer steps replan more often (more closed-loop)."""
    out: str | None = None
    """Output directory; default <ckpt>/eval/<task>_<domain>."""
    device: str = "auto"


register_schema("eval_schema", EvalConfig)


def run(cfg: EvalConfig) -> dict:
    from cotrain.envs.config import TaskConfig
    from cotrain.envs.make import make_task_env

    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    task_cfg = TaskConfig.from_dict(dict(cfg.task), source=f"configs/task/{cfg.task.get('task')}.yaml")
    task_cfg.domain(cfg.domain)  # unknown domain: one clear error before anything is built
    for v in cfg.variations:
        task_cfg.variation(v)
    ckpt = checkpoints.resolve(cfg.ckpt, "ckpt")
    policy = load_policy(ckpt, expected_spec=FeatureSpec(), device=device).eval()
    actions_per_chunk(cfg.n_action_steps, policy.chunk_size)  # a bad value fails here, before any env is built
    out = Path(cfg.out or ckpt / "eval" / f"{task_cfg.task}_{cfg.domain}")
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    results = {}
    bar = tqdm(total=cfg.episodes * len(cfg.variations), desc=f"eval {task_cfg.task}/{cfg.domain}", dynamic_ncols=True)
    for variation in cfg.variations:
        env = make_task_env(task_cfg, domain=cfg.domain, variation=variation, obs_mode="rgb")
        res = evaluate_variation(env, policy, variation, seeds, out / "videos", cfg.videos, progress=bar,
                                 n_action_steps=cfg.n_action_steps)
        env.close()
        results[variation] = res.to_dict()
        lo, hi = res.ci95
        log.info("%s/%s/%s: success %.1f%% (95%% CI %.1f–%.1f%%) over %d episodes", task_cfg.task, cfg.domain,
                 variation, 100 * res.success_rate, 100 * lo, 100 * hi, len(seeds))
    bar.close()
    summary = {"ckpt": str(ckpt), "task": task_cfg.task, "domain": cfg.domain, "episodes": cfg.episodes,
               "n_action_steps": cfg.n_action_steps, "results": results}
    write_json_atomic(out / "results.json", summary)
    return summary


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
def main(cfg) -> None:
    run(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
