"""torch.distributed for Stage II: process-group setup from torchrun's env, the DDP step module, metric reduction.

DDP only all-reduces gradients of what runs inside its `forward()`, and a Policy learns through `evaluate` and
`sft_loss`, not `forward`. `PolicyStep.forward` runs both for one micro-batch, so wrapping it in DDP syncs the
PPO and the anchor gradients in one reduction. Sampling (no gradients) calls the unwrapped policy directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cotrain.policies.base import Policy


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join torchrun's process group (nccl on GPU, gloo on CPU) or return a single-process DistInfo.

    device: "auto" (cuda:LOCAL_RANK if CUDA is available, else cpu), "cpu" or "cuda".
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"init_distributed: device must be auto|cpu|cuda, got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size == 1:
        return DistInfo(device=dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev)


class PolicyStep(nn.Module):
    """forward(obs, aux, real_batch, sft_grad) = (logprob, entropy, value, sft_loss) of one micro-batch."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy

    def forward(
        self, obs: dict[str, Any], aux: dict[str, torch.Tensor], real_batch: dict[str, Any] | None, sft_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        logprob, entropy, value = self.policy.evaluate(obs, aux)
        sft_loss = None
        if real_batch is not None:
            with torch.set_grad_enabled(sft_grad and torch.is_grad_enabled()):
                sft_loss = self.policy.sft_loss(real_batch)
        return logprob, entropy, value, sft_loss


def wrap_step(policy: Policy, info: DistInfo, find_unused_parameters: bool) -> nn.Module:
    """PolicyStep, inside DDP when world_size > 1 (which broadcasts rank 0's weights at construction)."""
    step = PolicyStep(policy)
    if info.world_size == 1:
        return step
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(step, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def all_reduce_mean(metrics: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Mean over ranks of each metric (every rank must pass the same keys)."""
    return _all_reduce(metrics, info, mean=True)


def all_reduce_sum(metrics: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Sum over ranks of each metric (every rank must pass the same keys)."""
    return _all_reduce(metrics, info, mean=False)


def _all_reduce(metrics: dict[str, float], info: DistInfo, mean: bool) -> dict[str, float]:
    if info.world_size == 1:
        return dict(metrics)
    keys = sorted(metrics)
    device = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
    values = torch.tensor([float(metrics[k]) for k in keys] + [float(len(keys))], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    if values[-1].item() != len(keys) * info.world_size:
        raise RuntimeError(f"all_reduce: ranks passed different metric sets (rank {info.rank}: {keys})")
    if mean:
        values /= info.world_size
    return dict(zip(keys, values[:-1].tolist()))
