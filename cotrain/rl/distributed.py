"""torch.distributed for Stage II: process-group setup from torchrun's env, the DDP / FSDP2 step module, metric
reduction, and the FSDP2 helpers for gradient sync, clipping, checkpoints and sampling.

DDP only all-reduces gradients of what runs inside its `forward()`, and a Policy learns through `evaluate` and
`sft_loss`, not `forward`. `PolicyStep.forward` runs both for one micro-batch, so wrapping it in DDP syncs the
PPO and the anchor gradients in one reduction. Sampling (no gradients) calls the unwrapped policy directly.

FSDP2 (`rl.data_parallel=fsdp2`, for policies too large to replicate) shards the policy itself, in place: each
shard unit (see `shard_units`) and then the root get `fully_shard`, and `sample`, `evaluate`, `sft_loss` are
registered as forward methods, so every entry point all-gathers what it uses and gradients are reduce-scattered
in backward. Every rank must then make the same calls in the same order; rank-dependent calls (bootstrap values
of truncated envs, rank-0 evaluation) go inside `gathered(policy)`, where the parameters stay unsharded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from cotrain.policies.base import Policy
from cotrain.rl.config import DataParallel

ENTRY_POINTS = ("sample", "value", "evaluate", "sft_loss")
"""The Policy methods callers use: FSDP2 forward methods of the sharded root."""


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


def wrap_step(policy: Policy, info: DistInfo, find_unused_parameters: bool,
              data_parallel: DataParallel = "ddp") -> nn.Module:
    """PolicyStep; when world_size > 1, either inside DDP (which broadcasts rank 0's weights at construction) or, for
    data_parallel="fsdp2", around the policy sharded in place by `shard_policy` (find_unused_parameters: DDP only)."""
    step = PolicyStep(policy)
    if info.world_size == 1:
        return step
    if data_parallel == "fsdp2":
        shard_policy(policy, info)
        return step
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(step, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def shard_units(policy: Policy) -> dict[str, tuple[str, ...]]:
    """{submodule name: its methods other than `forward` that code calls directly} for FSDP2's per-unit all-gathers.

    A policy declares them with an optional `fsdp_units()` returning that dict (e.g. the small VLA:
    {"trunk.0": (), ..., "head.decoder": ("memory_kv",)}: the decoder's keys/values are computed outside its
    forward). Without it: the entries of the policy's direct nn.ModuleList children, which must only be called
    through `forward` (the small VLA's trunk blocks). Everything else belongs to the root unit."""
    declared = getattr(policy, "fsdp_units", None)
    if declared is None:
        return {f"{name}.{i}": () for name, child in policy.named_children() if isinstance(child, nn.ModuleList)
                for i in range(len(child))}
    units = dict(declared())
    for name, methods in units.items():
        try:
            module = policy.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{type(policy).__name__}.fsdp_units(): {name!r} is not a submodule") from None
        missing = [m for m in methods if not callable(getattr(module, m, None))]
        if missing:
            raise ValueError(f"{type(policy).__name__}.fsdp_units(): {name!r} ({type(module).__name__}) "
                             f"has no method {missing}")
    return units


def shard_policy(policy: Policy, info: DistInfo) -> None:
    """FSDP2 in place: broadcast rank 0's parameters and buffers (as DDP does), fully_shard every shard unit, then
    the root; register the units' extra methods and the policy's entry points as forward methods. Idempotent."""
    if isinstance(policy, FSDPModule):
        return
    for t in [*policy.parameters(), *policy.buffers()]:  # one tensor at a time through the device (nccl needs it)
        staged = t.data.to(info.device)
        dist.broadcast(staged, src=0)
        t.data.copy_(staged)
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    units = shard_units(policy)
    for name, methods in sorted(units.items(), key=lambda u: -u[0].count(".")):  # nested units bottom-up
        module = policy.get_submodule(name)
        fully_shard(module, mesh=mesh)
        for method in methods:
            register_fsdp_forward_method(module, method)
    fully_shard(policy, mesh=mesh)
    for method in ENTRY_POINTS:
        register_fsdp_forward_method(policy, method)


def _fsdp_modules(module: nn.Module) -> list[FSDPModule]:
    return [m for m in module.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(policy: Policy) -> Iterator[None]:
    """Every rank enters; inside, the FSDP2 policy's parameters stay all-gathered, so `sample` / `evaluate` make no
    collectives and ranks may call them differently (rollouts' bootstrap values, rank-0 evaluation). No-grad use
    only; costs the unsharded parameters' memory. A no-op for unsharded policies."""
    modules = _fsdp_modules(policy)
    if not modules:
        yield
        return
    policy.set_reshard_after_forward(False)  # type: ignore[attr-defined]  (recurses into every unit)
    for m in modules:
        m.unshard()
    try:
        yield
    finally:
        for m in modules:  # units reshard after forward again; the root never does (FSDP2's own root default)
            m.set_reshard_after_forward(m is not policy, recurse=False)
            m.reshard()


def grad_sync(step_module: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Gradient accumulation without communication for all but the last micro-batch: DDP's `no_sync()`, FSDP2's
    `set_requires_gradient_sync(False)` (the accumulated unsharded gradients are reduce-scattered when sync)."""
    if sync:
        return contextlib.nullcontext()
    if isinstance(step_module, DistributedDataParallel):
        return step_module.no_sync()
    policy = getattr(step_module, "policy", None)
    if isinstance(policy, FSDPModule):
        return _no_gradient_sync(policy)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _no_gradient_sync(policy: FSDPModule) -> Iterator[None]:
    policy.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        policy.set_requires_gradient_sync(True)


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (the global norm over all ranks' shards for FSDP2), as a plain tensor."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def full_state_dict(policy: Policy) -> dict[str, torch.Tensor]:
    """Every rank calls (FSDP2 all-gathers): the unsharded state dict on CPU on rank 0, {} on the other ranks.
    For an unsharded policy: its own state dict on CPU."""
    if not isinstance(policy, FSDPModule):
        return {k: v.detach().to("cpu", copy=True) for k, v in policy.state_dict().items()}
    return get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(policy: Policy, state: dict[str, torch.Tensor]) -> None:
    """Every rank calls: load rank 0's full state dict (the other ranks pass {}) into the FSDP2 policy's shards."""
    if not isinstance(policy, FSDPModule):
        policy.load_state_dict(state)
        return
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(policy, dict(state), options=options)  # a copy: it swaps the dict's values for shards


def unsharded_copy(policy: Policy, state: dict[str, torch.Tensor]) -> Policy:
    """A plain CPU policy of the same config holding `state` (rank 0's `full_state_dict`): what save_checkpoint
    writes and rank-0 evaluation may run. Built from the policy's config without touching the global RNG streams."""
    from cotrain.policies.factory import make_policy

    for attr in ("config", "spec", "norm_stats"):
        if not hasattr(policy, attr):
            raise TypeError(f"unsharded_copy: {type(policy).__name__} has no `{attr}` (needed to rebuild it)")
    with torch.random.fork_rng(devices=[]):
        copy = make_policy(policy.config, policy.spec, policy.norm_stats(), load_pretrained=False)
    copy.load_state_dict(state)  # a copy: gathered tensors may be views of one buffer, which safetensors refuses
    return copy.train(policy.training)


def savable_policy(policy: Policy, rank: int) -> Policy | None:
    """Every rank calls: rank 0 gets what save_checkpoint writes (the policy itself, or for FSDP2 an unsharded CPU
    copy of the gathered weights), the other ranks None."""
    if not isinstance(policy, FSDPModule):
        return policy if rank == 0 else None
    state = full_state_dict(policy)
    return unsharded_copy(policy, state) if rank == 0 else None


def local_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """optimizer.state_dict() with every DTensor (FSDP2's per-rank shards) as its local tensor: a per-rank file that
    torch.load(weights_only=True) reads; resume needs the same world size."""
    state = optimizer.state_dict()
    local = {k: {n: v.to_local() if isinstance(v, DTensor) else v for n, v in per_param.items()}
             for k, per_param in state["state"].items()}
    return {"state": local, "param_groups": state["param_groups"]}


def load_local_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Inverse of `local_optimizer_state`: shards go back into DTensors laid out like their parameters."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not isinstance(p, DTensor):
                continue
            for name, v in optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and not isinstance(v, DTensor) and v.shape == p.to_local().shape:
                    optimizer.state[p][name] = DTensor.from_local(v, p.device_mesh, p.placements, run_check=False,
                                                                  shape=p.shape, stride=p.stride())


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
