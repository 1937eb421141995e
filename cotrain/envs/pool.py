"""Process pools over twin-task envs (one ManiSkill env per process) for work that maps over seeds: demos and
evaluation in experiments, scene rendering in `cotrain.pretrain_encoder`.

    with EnvPool(task_cfg, domain, workers=16, randomize=True) as pool:   # randomize: training data
        episodes = pool.map(expert_episode, seeds)   # expert_episode(env, worker_state, seed) runs in a worker
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any, Callable

_ENV = None
_STATE: dict[str, Any] = {}


def _init(task_cfg, domain: str, variation: str, obs_mode: str, torch_threads: int, randomize: bool) -> None:
    global _ENV
    import torch

    from cotrain.envs.make import make_task_env

    torch.set_num_threads(torch_threads)
    _ENV = make_task_env(task_cfg, domain=domain, variation=variation, obs_mode=obs_mode, randomize=randomize)


def _call(args):
    fn, item = args
    return fn(_ENV, _STATE, item)


class EnvPool:
    def __init__(self, task_cfg, domain: str, workers: int, variation: str = "train", obs_mode: str = "rgb",
                 randomize: bool = False):
        """`randomize` as in `make_task_env` (checked here: a worker that fails to start is restarted forever)."""
        if randomize:
            from cotrain.envs.episode_domain import check_randomize

            check_randomize(task_cfg, domain, gpu_sim=False)
        self.pool = mp.get_context("spawn").Pool(workers, initializer=_init,
                                                 initargs=(task_cfg, domain, variation, obs_mode, 1, randomize))

    def map(self, fn: Callable, items: list) -> list:
        """fn(env, worker_state: dict, item) in the workers, results in the order of `items`."""
        return self.pool.map(_call, [(fn, it) for it in items], chunksize=1)

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.close()
        self.pool.join()
