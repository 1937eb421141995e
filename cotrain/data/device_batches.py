"""The α mixture's batches gathered on the training device: every frame uploaded once, batch k drawn by indexing.

`DeviceBatches(mixture, start, stop, device)` holds the frames of all real datasets followed by all sim datasets
(uint8 images, states, actions, the action-chunk frame indices and padding, tokenised instructions) and the
mixture's schedule for steps start … stop−1 (`Mixture.schedule`: the same samples, in the same order, as
`Mixture.batch(k)`, so α is exact per batch and a resumed run draws what an uninterrupted one would). `batch(step)`
takes the step as a 0-d device tensor and launches only gathers: no host work, no host sync, no copy from the host,
so it can run inside a CUDA graph that advances `step` itself.

Instructions are tokenised once per frame and padded to the longest instruction of all datasets, so a batch whose
instructions are all shorter carries extra padding tokens (masked out of attention) that the CPU batch would not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cotrain.data.mixture import REAL, SIM, Mixture


@dataclass
class DeviceBatch:
    """One training batch as device tensors (leading dim B)."""

    image: torch.Tensor
    """uint8 [B, H, W, 3]"""
    state: torch.Tensor
    """float32 [B, S]"""
    task_ids: torch.Tensor
    """int64 [B, L]: instruction token ids (`tokenize` below)."""
    action: torch.Tensor
    """float32 [B, chunk, A]"""
    action_is_pad: torch.Tensor
    """bool [B, chunk]"""
    is_real: torch.Tensor
    """bool [B]"""


class DeviceBatches:
    """Frames on `device` and the mixture's schedule for steps [start, stop); `batch(step)` gathers batch `step`.

    `tokenize(tasks) -> int64 [N, L]` turns the instruction strings of all frames into ids (the policy's tokenizer),
    with one L for all."""

    def __init__(self, mixture: Mixture, start: int, stop: int, device: torch.device,
                 tokenize: Callable[[list[str]], torch.Tensor]) -> None:
        if not 0 <= start < stop:
            raise ValueError(f"DeviceBatches: need 0 <= start < stop, got start={start} stop={stop}")
        chunk = {d.chunk_size for g in (REAL, SIM) for d in mixture.groups[g].datasets}
        if len(chunk) != 1:
            raise ValueError(f"DeviceBatches: the datasets' chunk sizes differ: {sorted(chunk)}")
        self.chunk_size, self.start, self.stop = chunk.pop(), start, stop
        frames, offset = [], 0
        chunk_frames, chunk_pad, items = [], [], []
        for g in (REAL, SIM):
            for d in mixture.groups[g].datasets:
                rows, pad = d.chunk_rows()  # ChunkDataset's chunk t..t+H−1 of every stored frame
                chunk_pad.append(pad)
                chunk_frames.append(offset + rows)
                items.append(offset + d.frames)  # the dataset's items (its frames of positive weight)
                frames.append(d.store)
                offset += len(d.store)
            if g == REAL:
                self.n_real_frames = offset

        def cat(name: str) -> torch.Tensor:
            return torch.from_numpy(np.concatenate([getattr(s, name) for s in frames])).to(device)

        self.images, self.state, self.actions = cat("images"), cat("state"), cat("action")
        self.chunk_frames = torch.from_numpy(np.concatenate(chunk_frames)).to(device)
        self.chunk_pad = torch.from_numpy(np.concatenate(chunk_pad)).to(device)
        tasks = [t for s in frames for t in s.task]
        unique = sorted(set(tasks))
        row_of = {t: i for i, t in enumerate(unique)}
        self.task_ids = tokenize(unique)[torch.tensor([row_of[t] for t in tasks])].to(device)
        item_rows = np.concatenate(items)  # the mixture's positions (items of all real, then all sim datasets) -> rows
        self.schedule = torch.from_numpy(item_rows[mixture.schedule(start, stop)].astype(np.int32)).to(device)

    def __len__(self) -> int:
        """Frames held (real and sim)."""
        return len(self.state)

    def batch(self, step: torch.Tensor) -> DeviceBatch:
        """Batch `step` (0-d int64 device tensor, start <= step < stop; not checked, that would sync)."""
        rows = self.schedule.index_select(0, step.reshape(1) - self.start)[0].long()  # [B]
        chunks = self.chunk_frames.index_select(0, rows)  # [B, chunk]
        return DeviceBatch(image=self.images.index_select(0, rows), state=self.state.index_select(0, rows),
                           task_ids=self.task_ids.index_select(0, rows),
                           action=self.actions[chunks], action_is_pad=self.chunk_pad.index_select(0, rows),
                           is_real=rows < self.n_real_frames)
