"""The one policy interface that Stage I, Stage II, eval and the bridge call.

Observations are raw, exactly as the env, the dataset and the robot produce them (see `cotrain.data.spec`):
    obs = {IMAGE_KEY: uint8 [B, H, W, 3], STATE_KEY: float32 [B, state_dim], TASK_KEY: list[str] of length B}
A policy owns its preprocessing (resize, normalisation with the stats it was built with), so every caller
feeds the same raw observation and gets actions in env units back: preprocessing parity by construction.

A training batch adds the action chunk:
    batch = obs | {ACTION_KEY: float32 [B, H, action_dim], "action_is_pad": bool [B, H]}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

Obs = dict[str, Any]
Aux = dict[str, torch.Tensor]


class Policy(nn.Module, ABC):
    """Actor-critic over action chunks.

    `sample` acts; `evaluate` re-scores what `sample` did (the PPO ratio); `value` is V(s) alone; `sft_loss` is the
    supervised loss
    (flow matching or token cross-entropy) used by Stage I and by Stage II's real-data anchor.
    """

    chunk_size: int
    """H: actions per chunk."""

    # Optional: `fsdp_units() -> dict[str, tuple[str, ...]]`, the FSDP2 shard units (submodule name -> its methods
    # other than `forward` that code calls directly); default and rules in cotrain.rl.distributed.shard_units.

    @abstractmethod
    def sample(self, obs: Obs, explore: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Aux]:
        """Return (actions [B, H, A] in env units, logprob [B], value [B], aux).

        `explore=False` is deterministic (evaluation, deployment); `aux` holds whatever `evaluate` needs to
        re-score these actions (tensors with leading dim B only, so rollouts can store and minibatch them).
        """

    @abstractmethod
    def evaluate(self, obs: Obs, aux: Aux) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (logprob [B], entropy [B], value [B]) of the actions recorded in `aux` under current weights."""

    def value(self, obs: Obs) -> torch.Tensor:
        """V(s) [B] of raw observations, without sampling actions (Stage II's GAE bootstraps).

        This default takes the value of a deterministic `sample`, i.e. a full denoise; a policy whose value head
        reads only the observation's features overrides it to skip the action head."""
        with torch.no_grad():
            return self.sample(obs, explore=False)[2]

    @abstractmethod
    def sft_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Scalar supervised loss on a batch of demonstrations (padding masked out)."""
