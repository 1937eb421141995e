"""RLConfig: every knob of Stage II's PPO + real-data anchor, typed and checked (the `rl.` group of stage2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cotrain.errors import check_choice

DataParallel = Literal["ddp", "fsdp2"]
"""Values of `rl.data_parallel`."""


@dataclass
class RLConfig:
    num_steps: int = 20
    """Chunks each env runs per rollout (T). 20 chunks x H=4 = one 80-step episode, RLinf's setting."""
    reset_every_iteration: bool = True
    """Start every rollout from `env.reset(seeds=...)` derived from (seed, rank, iteration). Then a checkpoint taken
    between iterations resumes exactly without saving env state. False: episodes run on across iterations
    (needed when num_steps is shorter than an episode); a resumed run then restarts its episodes."""
    gamma: float = 0.99
    """Discount per chunk (one chunk = one PPO step)."""
    gae_lambda: float = 0.95
    """GAE λ."""
    update_epochs: int = 2
    """Passes over each rollout."""
    num_minibatches: int = 4
    """Optimizer steps per epoch; the rollout (T*N chunks on this rank) is split into this many minibatches."""
    micro_batches: int = 1
    """Gradient-accumulation slices per minibatch (memory); each has one backward pass and its own real batch."""
    clip_coef: float = 0.2
    """PPO ratio clip ε."""
    vf_clip_coef: float | None = 0.2
    """Value clip around the rollout's value estimate; None: no value clipping."""
    huber_delta: float = 10.0
    """δ of the Huber value loss."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus (the policy's `evaluate` entropy; heads without one return zeros)."""
    critic_warmup_iterations: int = 0
    """First updates that train only the value head: the policy-gradient, entropy and anchor terms are weighted 0
    and every parameter outside the value head gets learning rate 0 (the value loss would otherwise move the shared
    trunk). A fresh value head's advantages are noise, and PPO on them first degrades a good Stage I policy
    (RLinf's critic warm-up)."""
    beta: float = 0.2
    """β: weight of the SFT loss on a fresh real batch per micro-batch (the anchor). 0 turns the anchor off."""
    real_batch_size: int = 32
    """Real demonstrations per anchor batch."""
    lr: float = 5e-6
    """Learning rate of every parameter except the value head."""
    value_lr: float = 1e-4
    """Learning rate of the value head (parameters whose name starts with `value_param_prefix`)."""
    value_param_prefix: str = "value_head."
    """Name prefix (in `policy.named_parameters()`) of the value-head parameters; must match at least one."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_eps: float = 1e-5
    """AdamW ε."""
    target_kl: float | None = None
    """Stop the update early (CleanRL's target-KL): before each optimizer step, if the minibatch's approximate
    KL(π_prox ‖ π_θ) — measured on the forward just done — exceeds this, the step is skipped and the update ends.
    None: always run every epoch. Needed when one step moves a sharp density (flow-SDE) far past the clip region."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip per optimizer step."""
    seed: int = 0
    """Seeds env resets and minibatch shuffling (offset by rank)."""
    ddp_find_unused_parameters: bool = True
    """Pass-through to DDP. True: parameters outside both `evaluate` and `sft_loss` (e.g. a Flow-Noise network kept
    in a Flow-SDE policy) are allowed, at the cost of one graph traversal per micro-batch; False is faster when
    every trainable parameter is used (DDP then raises on the second iteration if one is not)."""
    data_parallel: str = "ddp"  # DataParallel (checked in __post_init__)
    """Multi-rank training (torchrun): "ddp" replicates the policy and all-reduces gradients; "fsdp2" shards
    parameters, gradients and optimizer state over ranks (FSDP2 `fully_shard`) for a policy too large for one GPU."""
    rollout_groups: int = 2
    """The rollout steps the envs in this many groups in turn (each env in one group when there are fewer envs):
    while one group's workers run a chunk, actions are sampled for the next group. 1: all envs step together, as
    do envs that cannot step a subset of envs (`cotrain.rl.vec_env.steps_groups`: toy envs)."""
    overlap_update: bool = True
    """Collect rollout k+1 in a background thread with a frozen copy of the weights from before update k while
    update k runs (one update of policy lag, corrected by decoupled PPO: `behav_weight_cap`). False: collect,
    then update. The pipeline drains at checkpoints and evaluations (see cotrain/rl/pipeline.py)."""
    behav_weight_cap: float | None = 2.0
    """Decoupled PPO (Hilton et al. 2021): the surrogate is weighted by π_prox/π_behav, truncated at this value
    (V-trace's ρ̄); None: untruncated. Only lagged rollouts (overlap_update) have weights other than 1."""

    def __post_init__(self) -> None:
        if self.critic_warmup_iterations < 0:
            raise ValueError(f"rl.critic_warmup_iterations must be >= 0, got {self.critic_warmup_iterations}")
        positive_ints = ("num_steps", "update_epochs", "num_minibatches", "micro_batches", "real_batch_size",
                         "rollout_groups")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"rl.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"rl.{name} must be in [0, 1], got {getattr(self, name)}")
        nonneg = ("vf_coef", "ent_coef", "beta", "lr", "value_lr", "weight_decay")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ValueError(f"rl.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("clip_coef", "huber_delta", "max_grad_norm", "adam_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"rl.{name} must be > 0, got {getattr(self, name)}")
        check_choice(self.data_parallel, DataParallel, "rl.data_parallel")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"rl.target_kl must be > 0 or None, got {self.target_kl}")
        if self.vf_clip_coef is not None and self.vf_clip_coef <= 0:
            raise ValueError(f"rl.vf_clip_coef must be > 0 or None, got {self.vf_clip_coef}")
        if self.behav_weight_cap is not None and self.behav_weight_cap < 1:
            raise ValueError(f"rl.behav_weight_cap must be >= 1 or None, got {self.behav_weight_cap}")
