"""Stage I's update for K runs at once, on device batches, captured as one CUDA graph (`cotrain.stage1`'s fast path).

Why: the small VLA's step (SFT loss, backward, clip, AdamW, EMA) is a few thousand tiny kernels; launched one by one
from Python it is bound by the host (~25 steps/s on an H100, the GPU mostly idle). Here one step of every run is
recorded once and replayed with a single launch per step:
- batches come from `DeviceBatches` (frames on the device, the α mixture's schedule indexed by a step counter that
  the graph itself advances), the images' random shift and every other random number are drawn on the device from
  each run's own generator (registered with the graph, so each replay draws fresh numbers);
- the learning rate is a 0-d tensor per optimizer group, copied from the run's schedule table by the graph; AdamW is
  fused and capturable; the gradient clip is the multi-tensor one; the EMA update reads its count from a tensor;
- K runs (e.g. K seeds) are K independent branches of one graph, each on its own CUDA stream, so the GPU runs their
  kernels side by side; run i computes exactly what a single run with its weights and generator computes.
The first `warmup` steps run eagerly (they are real training steps; they also initialise the optimizer state, cuBLAS
and the allocator before the capture). Without CUDA every step runs eagerly, the same function.

A non-finite loss cannot raise inside a graph: each run records the first step at which its loss was not finite, and
`check_finite` (called by Stage I before every log line and checkpoint) raises naming it, so no checkpoint ever holds
weights trained past it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from cotrain.data.device_batches import DeviceBatch, DeviceBatches
from cotrain.ema import EMA
from cotrain.policies import rng


def capturable_adamw(groups: list[dict], weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """Fused AdamW whose groups' learning rates are 0-d device tensors (`set_lr_tensors` keeps them so), capturable
    in a CUDA graph on CUDA."""
    groups = [dict(g, lr=torch.zeros((), device=device)) for g in groups]
    return torch.optim.AdamW(groups, lr=torch.zeros((), device=device), weight_decay=weight_decay, fused=True,
                             capturable=device.type == "cuda")


def own_lr_tensors(optimizer: torch.optim.Optimizer, device: torch.device) -> list[torch.Tensor]:
    """After `load_state_dict` (which replaces the groups with the saved ones: a float lr, capturable off when the
    checkpoint came from the plain path), give every group a device lr tensor and the capturable flag again."""
    lrs = []
    for group in optimizer.param_groups:
        value = group["lr"]
        lr = value.detach().to(device=device, dtype=torch.float32).clone() if isinstance(value, torch.Tensor) \
            else torch.tensor(float(value), device=device)
        group.update(lr=lr, fused=True, foreach=None, capturable=device.type == "cuda")
        lrs.append(lr)
    return lrs


def require_tensor_loss(policy: nn.Module) -> None:
    if not hasattr(policy, "sft_loss_tensors"):
        raise TypeError(f"stage1 fast path: {type(policy).__name__} has no sft_loss_tensors (the small VLA has); "
                        "use fast=false")


@dataclass
class Run:
    """One training run inside the step: its policy, optimizer, average and random numbers."""

    policy: nn.Module
    """A policy with `sft_loss_tensors` (the small VLA)."""
    optimizer: torch.optim.Optimizer
    """From `capturable_adamw` (or loaded into one, then `own_lr_tensors`)."""
    ema: EMA | None
    generator: torch.Generator
    """Every random draw of this run's steps (on the training device)."""
    lr_schedule: torch.Tensor
    """float32 [steps, groups] on the device: the learning rate of each optimizer group at each step from `start`."""
    lr: list[torch.Tensor] = field(default_factory=list)
    """The groups' 0-d lr tensors (set by `GraphedStep`)."""
    ema_updates: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    """The last step's SFT loss (a graph output once captured: read it after a step, it is overwritten by the next)."""
    grad_norm: torch.Tensor | None = None
    first_bad: torch.Tensor | None = None
    """The first step with a non-finite loss, −1 while there is none."""


class GraphedStep:
    """`step()` advances every run by one optimizer step on batch `self.step` of `data`."""

    def __init__(self, runs: list[Run], data: DeviceBatches, *, grad_clip: float, image_shift: int, has_pad: bool,
                 start: int, warmup: int = 3) -> None:
        for r in runs:
            require_tensor_loss(r.policy)
        self.runs, self.data, self.grad_clip, self.image_shift, self.has_pad = runs, data, grad_clip, image_shift, has_pad
        self.device = data.state.device
        self.cuda = self.device.type == "cuda"
        self.step_t = torch.tensor(start, device=self.device)
        """The step about to run (what `data.batch` and the lr tables are indexed by)."""
        for r in runs:
            r.lr = own_lr_tensors(r.optimizer, self.device)
            r.ema_updates = torch.tensor(r.ema.updates if r.ema is not None else 0, device=self.device)
            r.first_bad = torch.tensor(-1, device=self.device)
        self.real_fraction: torch.Tensor | None = None
        self.warmup, self.eager_steps = warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._streams = [torch.cuda.Stream(self.device) for _ in runs] if self.cuda else []
        self._side = torch.cuda.Stream(self.device) if self.cuda else None

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif not self.cuda:
            self._advance()
        elif self.eager_steps < self.warmup:
            self._on_side_stream(self._advance)
            self.eager_steps += 1
        else:
            self._capture()
            self.graph.replay()

    def _on_side_stream(self, fn) -> None:  # noqa: ANN001
        current = torch.cuda.current_stream(self.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            fn()
        current.wait_stream(self._side)

    def _capture(self) -> None:
        """Record one `_advance` (the state it starts from is the live state: capturing runs nothing)."""
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device):
            for r in self.runs:
                self.graph.register_generator_state(r.generator)
        current = torch.cuda.current_stream(self.device)
        self._side.wait_stream(current)
        with torch.cuda.graph(self.graph, stream=self._side):
            self._advance()
        current.wait_stream(self._side)

    def _advance(self) -> None:
        """Batch `step_t` → one update of every run (each on its own stream on CUDA) → step_t + 1."""
        batch = self.data.batch(self.step_t)
        row = self.step_t.reshape(1) - self.data.start
        self.real_fraction = batch.is_real.float().mean()
        here = torch.cuda.current_stream(self.device) if self.cuda else None
        for r, stream in zip(self.runs, self._streams or [None] * len(self.runs)):
            if stream is not None:
                stream.wait_stream(here)
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                self._update(r, batch, row)
        for stream in self._streams:
            here.wait_stream(stream)
        self.step_t.add_(1)

    def _update(self, r: Run, batch: DeviceBatch, row: torch.Tensor) -> None:
        """`cotrain.stage1.sft_step` for one run, tensor-only: loss, backward, clip, AdamW, EMA."""
        torch._foreach_copy_(r.lr, list(r.lr_schedule.index_select(0, row)[0].unbind()))
        cpu = r.generator if not self.cuda else torch.Generator()  # draw_from needs one; nothing draws on the host
        with rng.draw_from(cpu, r.generator if self.cuda else None):
            shift = None
            if self.image_shift > 0:  # first, as sft_loss draws it (then the state noise, then the head's draws)
                shift = rng.randint(-self.image_shift, self.image_shift + 1, (batch.image.shape[0], 2), self.device)
            loss = r.policy.sft_loss_tensors(batch.image, batch.state, batch.task_ids, batch.action,
                                             batch.action_is_pad, has_pad=self.has_pad, shift=shift)
        r.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        r.grad_norm = torch.nn.utils.clip_grad_norm_(r.policy.parameters(), self.grad_clip,
                                                     foreach=True if self.cuda else None)
        r.optimizer.step()
        if r.ema is not None:
            r.ema.update_counted(r.policy, r.ema_updates)
        r.first_bad.copy_(torch.where(torch.isfinite(loss) | (r.first_bad >= 0), r.first_bad, self.step_t))
        r.loss = loss.detach()

    def check_finite(self, names: list[str]) -> None:
        """Raise if any run met a non-finite loss (a host sync)."""
        for r, name in zip(self.runs, names):
            bad = int(r.first_bad)
            if bad >= 0:
                raise FloatingPointError(f"stage1 ({name}): non-finite SFT loss at step {bad}")

    def sync_counts(self) -> None:
        """Write the EMA counts back to the host objects (before a checkpoint)."""
        for r in self.runs:
            if r.ema is not None:
                r.ema.updates = int(r.ema_updates)
