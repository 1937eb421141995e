"""ManiSkill 3 twins of the paper's four tasks (pick-and-place, push-cube-by-instruction, open/close drawer), built
from primitives and the wheel's Panda; their domains (`sim` and `real_proxy`, the stand-in for the real world);
scripted experts; and vector envs with chunk-aware rendering.

Public API:
    load_task_config(name) -> TaskConfig                       # configs/task/<name>.yaml, strict
    make_env(task_cfg, domain, obs_mode, num_envs, seed, variation, backend, randomize) -> vector env
    make_task_env(task_cfg, domain, variation, obs_mode, randomize) -> one ManiSkill env (num_envs = 1)
    # randomize=True: each episode in a domain drawn from task_cfg.randomization (training envs, never the real-proxy)
    make_expert(task, domain_cfg) ; run_expert_episode(env, expert, seed) -> ExpertEpisode(frames, success, seed)
"""

from cotrain.envs.config import TASKS, ConfigError, DomainConfig, TaskConfig, load_task_config
from cotrain.envs.experts import ExpertEpisode, WaypointExpert, make_expert, run_expert_episode
from cotrain.envs.make import make_task_env
from cotrain.envs.vector_env import make_env

__all__ = [
    "TASKS", "ConfigError", "DomainConfig", "TaskConfig", "load_task_config", "ExpertEpisode", "WaypointExpert",
    "make_expert", "run_expert_episode", "make_task_env", "make_env",
]
