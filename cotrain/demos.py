"""Scripted-expert demonstrations in a twin task, written as a LeRobot dataset with provenance.

    python -m cotrain.demos task=pick_place domain=sim episodes=100 randomize=true out=datasets/sim/pick_place
    python -m cotrain.demos task=pick_place domain=real_proxy episodes=20     # teleop-like noise, real-proxy

`domain=real_proxy` records in the real-proxy domain (the simulated stand-in for the real world), with the
expert's teleop-like noise; its episodes are labelled `real_proxy`, never `real`. `randomize=true` (training demos
in sim or a calibrated twin) runs each episode in a domain drawn around the configured one from the task config's
`randomization`, seeded by the episode's seed; the real-proxy refuses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import hydra
from omegaconf import OmegaConf
from tqdm import tqdm

from cotrain.config import register_schema
from cotrain.data import DatasetWriter, FeatureSpec, Provenance
from cotrain.data.provenance import simulated_in

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
    workers: int = 0
    """Env processes running attempts in parallel (0: one env in this process)."""
    randomize: bool = False
    """Each episode in a domain drawn around `domain` from the task config's `randomization` (training demos; the
    real-proxy refuses it). The experiment runner turns it on for its sim demos."""


register_schema("demos_schema", DemosConfig)


@dataclass
class Attempts:
    """Counts of `expert_episodes`' attempts so far."""

    attempts: int = 0
    successes: int = 0

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.attempts, 1)


def _attempt(env, state: dict, item: tuple[int, bool, float]):
    """One expert episode of seed `item[0]` in `env` (an EnvPool worker's, or this process's)."""
    from cotrain.envs.experts import make_expert, run_expert_episode

    seed, teleop_noise, dart_noise_std = item
    if ("expert", teleop_noise) not in state:
        state["expert", teleop_noise] = make_expert(env.task_cfg.task, env.domain, teleop_noise=teleop_noise)
    return run_expert_episode(env, state["expert", teleop_noise], seed, dart_noise_std=dart_noise_std)


@contextmanager
def _mapper(task_cfg, domain: str, variation: str, workers: int, randomize: bool) -> Iterator[Callable]:
    """map(fn, items) over `workers` env processes (cotrain.envs.pool), or over one env in this process (0)."""
    if workers > 0:
        from cotrain.envs.pool import EnvPool

        with EnvPool(task_cfg, domain, workers, variation=variation, randomize=randomize) as pool:
            yield pool.map
        return
    from cotrain.envs.make import make_task_env

    env, state = make_task_env(task_cfg, domain=domain, variation=variation, obs_mode="rgb", randomize=randomize), {}
    try:
        yield lambda fn, items: [fn(env, state, item) for item in items]
    finally:
        env.close()


def expert_episodes(task_cfg, domain: str, episodes: int, seed: int = 0, *, variation: str = "train",
                    workers: int = 0, teleop_noise: bool = True, dart_noise_std: float = 0.0,
                    keep_failures: bool = False, max_attempts_factor: int = 3,
                    counts: Attempts | None = None, randomize: bool = False) -> Iterator:
    """Yield the first `episodes` expert episodes (`ExpertEpisode`, seed order) over seeds seed, seed+1, …, skipping
    failures unless `keep_failures`; raise after episodes × max_attempts_factor attempts. Attempts run in rounds over
    `workers` env processes (0: one env here, one attempt per missing episode); `counts` tallies them.
    `randomize`: each episode in a domain drawn around `domain` from its seed (`make_task_env`; training demos)."""
    task_cfg.domain(domain)  # an unknown domain fails here, before any env is built
    counts = counts if counts is not None else Attempts()
    kept, limit = 0, episodes * max_attempts_factor
    with _mapper(task_cfg, domain, variation, workers, randomize) as run:
        while kept < episodes:
            if counts.attempts >= limit:
                raise RuntimeError(f"demos: only {kept}/{episodes} successful episodes in {counts.attempts} attempts")
            missing = episodes - kept
            n = min(limit - counts.attempts, missing if workers == 0 else max(workers, missing + missing // 4))
            items = [(seed + counts.attempts + i, teleop_noise, dart_noise_std) for i in range(n)]
            counts.attempts += n
            for ep in run(_attempt, items):
                counts.successes += ep.success
                if (ep.success or keep_failures) and kept < episodes:
                    kept += 1
                    yield ep


def write_episodes(writer: DatasetWriter, episodes: Iterable, domain: str, progress: tqdm | None = None) -> int:
    """Append expert episodes simulated in the task config domain `domain` to a dataset (provenance:
    `simulated_in(domain)`, expert, the episode's seed); returns their count."""
    written = 0
    for ep in episodes:
        for f in ep.frames:
            writer.add_frame(f["image"], f["state"], f["action"], f["task"])
        writer.save_episode(Provenance(simulated_in(domain), "expert", ep.seed))
        written += 1
        if progress is not None:
            progress.update(1)
    return written


def generate(cfg: DemosConfig) -> dict[str, float]:
    from cotrain.envs.config import TaskConfig

    task_cfg = TaskConfig.from_dict(dict(cfg.task), source=f"configs/task/{cfg.task.get('task')}.yaml")
    out = cfg.out or f"datasets/{cfg.domain}/{task_cfg.task}"
    counts = Attempts()
    episodes = expert_episodes(task_cfg, cfg.domain, cfg.episodes, cfg.seed, variation=cfg.variation,
                               workers=cfg.workers, teleop_noise=cfg.teleop_noise, dart_noise_std=cfg.dart_noise_std,
                               keep_failures=cfg.keep_failures, max_attempts_factor=cfg.max_attempts_factor,
                               counts=counts, randomize=cfg.randomize)
    bar = tqdm(total=cfg.episodes, desc=f"demos {task_cfg.task}/{cfg.domain}", dynamic_ncols=True)
    with DatasetWriter(out, FeatureSpec(), commit_every=cfg.commit_every) as writer:
        written = write_episodes(writer, episodes, cfg.domain, bar)
    bar.close()
    log.info("wrote %d episodes to %s (expert success %.1f%% over %d attempts)", written, out,
             100 * counts.success_rate, counts.attempts)
    return {"written": written, "attempts": counts.attempts, "expert_success": counts.success_rate}


@hydra.main(config_path="../configs", config_name="demos", version_base="1.3")
def main(cfg) -> None:
    generate(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
