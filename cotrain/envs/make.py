"""Build one twin-task env (a ManiSkill env) from a task config, a domain and a variation."""

from __future__ import annotations

from typing import Literal

from cotrain.envs.base import TwinTaskEnv
from cotrain.envs.config import TaskConfig
from cotrain.envs.drawer import CloseDrawerEnv, OpenDrawerEnv
from cotrain.envs.pick_place import PickPlaceEnv
from cotrain.envs.push_cube import PushCubeEnv
from cotrain.envs.robot import ROBOT_UID

ENV_CLASSES: dict[str, type[TwinTaskEnv]] = {
    "pick_place": PickPlaceEnv,
    "push_cube": PushCubeEnv,
    "open_drawer": OpenDrawerEnv,
    "close_drawer": CloseDrawerEnv,
}


def make_task_env(task_cfg: TaskConfig, domain: str = "sim", variation: str = "train",
                  obs_mode: Literal["state", "rgb"] = "rgb", num_envs: int = 1,
                  sim_backend: Literal["physx_cpu", "physx_cuda"] = "physx_cpu",
                  robot_uid: str = ROBOT_UID, randomize: bool = False) -> TwinTaskEnv:
    """One ManiSkill env of the task (`num_envs` > 1 needs `physx_cuda`). Unknown domain/variation -> ConfigError.

    `robot_uid`: ROBOT_UID (native CPU maths, the default) or MANISKILL_ROBOT_UID (ManiSkill's torch controller and
    maths, the reference the native path is measured and tested against).
    `randomize`: each episode runs in a domain drawn around `domain` from `task_cfg.randomization` (training envs;
    `TwinTaskEnv`); a ConfigError on the real-proxy. Evaluation leaves it off."""
    return ENV_CLASSES[task_cfg.task](task_cfg, domain=domain, variation=variation, obs_mode=obs_mode,
                                      num_envs=num_envs, sim_backend=sim_backend, robot_uid=robot_uid,
                                      randomize=randomize)
