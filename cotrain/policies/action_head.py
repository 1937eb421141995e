"""The action-head interface and its registry, keyed by head config class (no `if head == …` anywhere).

A head maps the trunk's context to a chunk of *normalised* actions and scores them; the policy around it owns
the encoders, the normalisation and the value head. All actions here are in [-1, 1]-normalised units.

Sampling comes in two halves: `draw_noise` draws every random number a sample needs (through
`cotrain.policies.rng`, so the thread's generators apply), and `sample(ctx, explore, noise)` is a deterministic
function of its tensors. Why: a deterministic, tensor-only `sample` can be captured once as a CUDA graph and
replayed (`cotrain.policies.cuda_graph`), which a draw inside it would forbid (the replay would repeat it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from cotrain.policies.base import Aux


@dataclass
class Context:
    """What the trunk hands a head."""

    tokens: torch.Tensor
    """[B, L, D] trunk output tokens."""
    pad_mask: torch.Tensor | None
    """[B, L] bool, True where a token is padding (attention ignores it); None when nothing is padded."""
    pooled: torch.Tensor
    """[B, D] summary token (also the value head's input)."""


@dataclass(frozen=True)
class HeadShape:
    d_model: int
    n_heads: int
    mlp_ratio: int
    chunk_size: int
    action_dim: int


Noise = dict[str, torch.Tensor]
"""The random numbers of one `sample` call, leading dim B, keyed by the head's own names."""


class ActionHead(nn.Module, ABC):
    @abstractmethod
    def sft_loss(self, ctx: Context, actions_n: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """Scalar supervised loss for normalised target chunks [B, H, A], padding [B, H] masked out."""

    @abstractmethod
    def draw_noise(self, batch: int, device: torch.device, explore: bool) -> Noise:
        """Every random number `sample(…, explore, noise)` needs for `batch` samples, drawn through
        `cotrain.policies.rng` (the same draws whatever the network computes)."""

    @abstractmethod
    def sample(self, ctx: Context, explore: bool, noise: Noise) -> tuple[torch.Tensor, torch.Tensor, Aux]:
        """(normalised actions [B, H, A], logprob [B], aux) — aux holds what `evaluate` needs, leading dim B.
        Deterministic given `noise` (from `draw_noise` with the same batch and explore): no draws, no host syncs."""

    @abstractmethod
    def evaluate(self, ctx: Context, aux: Aux) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprob [B], entropy [B]) of the sample recorded in aux, under the current weights."""


HEADS: dict[type, type[ActionHead]] = {}


def register_head(config_cls: type) -> Callable[[type[ActionHead]], type[ActionHead]]:
    def deco(head_cls: type[ActionHead]) -> type[ActionHead]:
        if config_cls in HEADS:
            raise ValueError(f"head config {config_cls.__name__} already registered to {HEADS[config_cls].__name__}")
        HEADS[config_cls] = head_cls
        return head_cls

    return deco


def make_head(cfg: Any, shape: HeadShape) -> ActionHead:
    if type(cfg) not in HEADS:
        raise KeyError(f"no action head registered for {type(cfg).__name__}; registered: {[c.__name__ for c in HEADS]}")
    return HEADS[type(cfg)](cfg, shape)

