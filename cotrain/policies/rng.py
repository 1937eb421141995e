"""The generators a policy's random draws come from: torch's global RNG, or, inside `draw_from`, this thread's own.

Why: Stage II samples the next rollout in a background thread while the learner's forward (the flow-matching
anchor's noise, the image shifts) draws in the main thread. torch's global generators are process-wide, so two
threads drawing from them interleave by timing; swapping a private state in under a lock serialises the threads.
Instead every draw inside a policy passes `generator=generator_for(device)`: inside `with draw_from(cpu, cuda):`
that is the thread's own torch.Generator, elsewhere None — torch's global RNG, so Stage I, eval and the bridge
draw exactly as before. (`torch.randn_like` takes no generator: use `randn_like` below.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

_local = threading.local()


@contextmanager
def draw_from(cpu: torch.Generator | None, device: torch.Generator | None = None) -> Iterator[None]:
    """For the current thread only, policies draw CPU numbers from `cpu` (None: torch's global CPU generator) and
    accelerator numbers from `device`."""
    generators = {"cpu": cpu} | ({device.device.type: device} if device is not None else {})
    previous = getattr(_local, "generators", None)
    _local.generators = generators
    try:
        yield
    finally:
        _local.generators = previous


def generator_for(device: torch.device | str | None) -> torch.Generator | None:
    """The current thread's generator for `device` (None = CPU) inside `draw_from`; None (torch's global) outside."""
    generators = getattr(_local, "generators", None)
    if generators is None:
        return None
    kind = torch.device(device if device is not None else "cpu").type
    if kind not in generators:  # falling back to the global RNG would silently make the draw depend on timing
        raise RuntimeError(f"draw_from: a policy draws on {kind}, but the context holds generators for "
                           f"{sorted(generators)} only")
    return generators[kind]


def randn(shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.randn(tuple(shape), device=device, dtype=dtype, generator=generator_for(device))


def randn_like(x: torch.Tensor) -> torch.Tensor:
    return randn(x.shape, x.device, x.dtype)


def rand(shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    return torch.rand(tuple(shape), device=device, generator=generator_for(device))


def randint(low: int, high: int, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    return torch.randint(low, high, tuple(shape), device=device, generator=generator_for(device))
