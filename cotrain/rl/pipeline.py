"""Stage II's rollouts, optionally overlapped with the update (rl.overlap_update: asynchronous PPO, one update of lag).

    overlap_update=False:  rollout k (weights θ_k) → update k → rollout k+1 (θ_{k+1}) → ...
    overlap_update=True:   rollout k+1 runs in a background thread with a frozen copy of θ_k (the behaviour policy)
                           while update k turns θ_k into θ_{k+1}; update k+1 then trains on data one update old,
                           which the trainer's decoupled PPO corrects (ratio vs π_prox, weight π_prox/π_behav).

Threads suffice: env workers are processes (waiting on their pipes releases the GIL) and both threads only launch
kernels. On CUDA the rollout samples on its own stream, so its small kernels do not queue behind the update's.
Determinism without a lock: the rollout thread's policy draws from the collector's own generators, seeded per
iteration (`RNGStream`, entered for that thread only through cotrain/policies/rng.py), and the learner alone draws
from torch's global RNG, so thread timing changes no number.
Checkpoints: `rollout(k, prefetch_next=False)` drains the pipeline: no rollout is in flight when the caller saves
or evaluates after update k, and rollout k+1 is then collected with θ_{k+1}, as a run resumed from that checkpoint
collects it. Stage II drains before every checkpoint and evaluation, so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from cotrain.policies.base import Policy
from cotrain.rl.config import RLConfig
from cotrain.rl.distributed import gathered
from cotrain.rl.rollout import RolloutBuffer, RolloutCollector, RolloutStats
from cotrain.rl.vec_env import VecEnv

Rollout = tuple[RolloutBuffer, RolloutStats]


class RolloutPipeline:
    """Hands out rollout k for update k; with rl.overlap_update it collects rollout k+1 during update k."""

    def __init__(self, env: VecEnv, policy: Policy, cfg: RLConfig, rank: int = 0):
        if cfg.overlap_update and cfg.data_parallel == "fsdp2":
            raise ValueError("rl.overlap_update needs a full copy of the weights to sample with; "
                             "set rl.overlap_update=false with rl.data_parallel=fsdp2")
        self.policy, self.overlap = policy, cfg.overlap_update
        self.behaviour = copy.deepcopy(policy).requires_grad_(False) if self.overlap else policy
        """The weights that sample: a frozen copy refreshed before each rollout (overlap), else the policy."""
        self.collector = RolloutCollector(env, self.behaviour, cfg, rank=rank)
        device = next(policy.parameters()).device
        self.stream = torch.cuda.Stream(device) if self.overlap and device.type == "cuda" else None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="rollout") if self.overlap else None
        self.pending: tuple[int, Future[Rollout]] | None = None

    def rollout(self, iteration: int, prefetch_next: bool) -> Rollout:
        """Rollout `iteration`: collected now with the current weights, or the one collected during the previous
        update. With `prefetch_next` (and rl.overlap_update), rollout iteration+1 starts in the background with the
        current weights before this returns: call the update next. Without it, nothing is in flight afterwards."""
        if self.pending is not None:
            pending_iteration, future = self.pending
            self.pending = None
            if pending_iteration != iteration:
                raise RuntimeError(f"RolloutPipeline: rollout {pending_iteration} is in flight, {iteration} asked for")
            result = future.result()
            result[0].policy_lag = 1  # sampled by the weights from before the update that ran meanwhile
        else:
            self._refresh_behaviour()
            result = self._collect(iteration)
        if prefetch_next and self.executor is not None:
            self._refresh_behaviour()
            self.pending = (iteration + 1, self.executor.submit(self._collect, iteration + 1))
        return result

    def _refresh_behaviour(self) -> None:
        if self.behaviour is self.policy:
            return
        self.behaviour.load_state_dict(self.policy.state_dict())
        self.behaviour.train(self.policy.training)
        if self.stream is not None:  # the copy above runs on the current stream; sampling waits for it
            self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))

    def _collect(self, iteration: int) -> Rollout:
        stream = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with stream, gathered(self.behaviour):  # fsdp2: ranks sample without collectives (bootstrap values differ)
            return self.collector.collect(iteration)

    def close(self) -> None:
        """Wait for a rollout in flight (its env must not close under it) and stop the thread."""
        if self.pending is not None:
            self.pending[1].exception()
            self.pending = None
        if self.executor is not None:
            self.executor.shutdown()
