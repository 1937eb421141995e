"""The action-head interface and its registry, keyed by head config class (no `if head == …` anywhere).

A head maps the trunk's context to a chunk of *normalised* actions and scores them; the policy around it owns
the encoders, the normalisation and the value head. All actions here are in [-1, 1]-normalised units.
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


class ActionHead(nn.Module, ABC):
    @abstractmethod
    def sft_loss(self, ctx: Context, actions_n: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """Scalar supervised loss for normalised target chunks [B, H, A], padding [B, H] masked out."""

    @abstractmethod
    def sample(self, ctx: Context, explore: bool) -> tuple[torch.Tensor, torch.Tensor, Aux]:
        """(normalised actions [B, H, A], logprob [B], aux) — aux holds what `evaluate` needs, leading dim B."""

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

