"""Stage II: PPO over action chunks in the twin, anchored by an SFT loss on real demonstrations.

Modules (rsl_rl-like split): config (RLConfig), vec_env (the env contract, env groups), rollout (buffer +
collector), pipeline (rollout k+1 during update k), gae, ppo_loss (clipped + decoupled PPO), anchor (real-batch
stream), trainer (the update), distributed (torchrun: DDP / FSDP2). Test doubles of the contracts: tests/doubles/rl_toys.py.
"""

from cotrain.rl.anchor import RealBatchStream
from cotrain.rl.config import RLConfig
from cotrain.rl.distributed import DistInfo, PolicyStep, all_reduce_mean, all_reduce_sum, init_distributed
from cotrain.rl.pipeline import RolloutPipeline
from cotrain.rl.rollout import RolloutBuffer, RolloutCollector, RolloutStats, reset_seeds
from cotrain.rl.trainer import PPOTrainer, make_optimizer
from cotrain.rl.vec_env import VecEnv

__all__ = [
    "DistInfo", "PPOTrainer", "PolicyStep", "RLConfig", "RealBatchStream", "RolloutBuffer", "RolloutCollector",
    "RolloutPipeline", "RolloutStats", "VecEnv", "all_reduce_mean", "all_reduce_sum", "init_distributed", "reset_seeds",
    "make_optimizer",
]
