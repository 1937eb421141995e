"""Scripted-expert demonstrations in a twin task, written as a LeRobot dataset with provenance.

    python -m cotrain.demos task=pick_place domain=sim episodes=100 out=datasets/sim/pick_place
    python -m cotrain.demos task=pick_place domain=real_proxy episodes=20     # teleop-like noise, real-proxy

`domain=real_proxy` records in the real-proxy domain (the simulated stand-in for the real world), with the
expert's teleop-like noise; its episodes are labelled `real_proxy`, never `real`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import hydra
from omegaconf import OmegaConf
from tqdm import tqdm

from cotrain.config import register_schema
from cotrain.data import DatasetWriter, FeatureSpec, Provenance

log = logging.getLogger("cotrain.demos")


@dataclass
class DemosConfig:
    task: dict[str, Any] = field(default_factory=dict)
    """Task config (configs/task/*.yaml), validated by `cotrain.envs.config.TaskConfig.from_dict`."""
    domain: str = "sim"
    """sim or real_proxy."""
    variation: str = "train"
    """Variation of the task config to draw episodes from."""
    episodes: int = 10
    """Successful episodes to write (failed ones are retried with the next seed unless keep_failures)."""
    seed: int = 0
    """Seed of the first episode; episode i uses seed + i (+ retries)."""
    out: str | None = None
    """Dataset root; default datasets/<domain>/<task>. Appends when it exists."""
    teleop_noise: bool = True
    """Add the domain's demo noise (teleop-like in the real-proxy)."""
    dart_noise_std: float = 0.0
    """DART: execute the expert's Δxyz plus OU noise of this std (m/step) while recording its clean action, so the
    demos show recoveries (`cotrain.envs.experts.run_expert_episode`). 0 = off."""
    keep_failures: bool = False
    """Also write episodes where the expert failed."""
    max_attempts_factor: int = 3
    """Give up after episodes × this many attempts."""
    commit_every: int = 10
    """Episodes per atomic commit (a crash loses at most the uncommitted ones)."""


register_schema("demos_schema", DemosConfig)


def generate(cfg: DemosConfig) -> dict[str, float]:
    from cotrain.envs.config import TaskConfig
    from cotrain.envs.experts import make_expert, run_expert_episode
    from cotrain.envs.make import make_task_env

    task_cfg = TaskConfig.from_dict(dict(cfg.task), source=f"configs/task/{cfg.task.get('task')}.yaml")
    domain = task_cfg.domain(cfg.domain)
    out = cfg.out or f"datasets/{cfg.domain}/{task_cfg.task}"
    env = make_task_env(task_cfg, domain=cfg.domain, variation=cfg.variation, obs_mode="rgb")
    expert = make_expert(task_cfg.task, domain, teleop_noise=cfg.teleop_noise)
    spec = FeatureSpec()
    written = attempts = successes = 0
    bar = tqdm(total=cfg.episodes, desc=f"demos {task_cfg.task}/{cfg.domain}", dynamic_ncols=True)
    with DatasetWriter(out, spec, commit_every=cfg.commit_every) as writer:
        while written < cfg.episodes:
            if attempts >= cfg.episodes * cfg.max_attempts_factor:
                raise RuntimeError(f"demos: only {written}/{cfg.episodes} successful episodes in {attempts} attempts")
            seed = cfg.seed + attempts
            attempts += 1
            ep = run_expert_episode(env, expert, seed, dart_noise_std=cfg.dart_noise_std)
            successes += ep.success
            if not (ep.success or cfg.keep_failures):
                continue
            for f in ep.frames:
                writer.add_frame(f["image"], f["state"], f["action"], f["task"])
            writer.save_episode(Provenance(cfg.domain, "expert", seed))
            written += 1
            bar.update(1)
            bar.set_postfix(success=f"{successes / attempts:.0%}")
    bar.close()
    env.close()
    rate = successes / max(attempts, 1)
    log.info("wrote %d episodes to %s (expert success %.1f%% over %d attempts)", written, out, 100 * rate, attempts)
    return {"written": written, "attempts": attempts, "expert_success": rate}


@hydra.main(config_path="../configs", config_name="demos", version_base="1.3")
def main(cfg) -> None:
    generate(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
