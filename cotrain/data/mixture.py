"""Batches drawn from real and sim datasets with the real fraction α exact and reproducible from a seed.

Batch k holds n_real(k) real samples and B − n_real(k) sim samples, where
    n_real(k) = round((k+1)·α·B) − round(k·α·B)
so every batch holds exactly α·B real samples when that is an integer, and in any case the first K batches hold
round(K·α·B) in total. Within the real (or sim) group, the j-th draw is position j mod N of the permutation
for epoch j div N, seeded by (seed, group, epoch): batches are a pure function of (seed, k), so a resumed run
continues with exactly the batches an uninterrupted run would have drawn. When the datasets weight their frames
unequally (`ChunkDataset.weights`, from `FrameWeights`), epoch e's N draws are instead drawn with replacement with
probability ∝ weight, from the same seed (group, epoch): the expected loss is then the weight-averaged one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from cotrain.data.reader import ChunkDataset
from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY
from cotrain.data.stats import NormStats

REAL, SIM = 0, 1


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def collate(items: list[dict]) -> dict:
    batch = {k: torch.stack([it[k] for it in items]) for k in (IMAGE_KEY, STATE_KEY, ACTION_KEY, "action_is_pad")}
    batch[TASK_KEY] = [it[TASK_KEY] for it in items]
    return batch


class _Group:
    """Several datasets seen as one, sampled by epoch permutations."""

    def __init__(self, datasets: Sequence[ChunkDataset], seed: int, group: int) -> None:
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self.seed, self.group = seed, group
        weights = np.concatenate([d.weights for d in self.datasets]) if self.datasets else np.ones(0)
        self.p = None if len(weights) == 0 or np.all(weights == weights[0]) else weights / weights.sum()
        """Draw probabilities of the frames when their weights differ (None: uniform, epoch permutations)."""

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def positions(self, start: int, count: int) -> np.ndarray:
        """Flat frame positions (over the concatenated datasets) of draws start … start+count−1: draw j is
        position j mod N of epoch (j div N)'s permutation."""
        n = len(self)
        j = np.arange(start, start + count, dtype=np.int64)
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(j // n):
            here = j // n == epoch
            rng = np.random.default_rng([self.seed, self.group, int(epoch)])
            order = rng.permutation(n) if self.p is None else rng.choice(n, size=n, p=self.p)
            out[here] = order[j[here] % n]
        return out

    def item(self, flat: int) -> dict:
        d = int(np.searchsorted(self.offsets, flat, side="right") - 1)
        return self.datasets[d][flat - int(self.offsets[d])]


class Mixture:
    """`batch(k)` / iteration from `start`: dicts as in `cotrain.policies.base`, plus `is_real` bool[B]."""

    def __init__(
        self,
        real: Sequence[ChunkDataset],
        sim: Sequence[ChunkDataset],
        alpha: float,
        batch_size: int,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= alpha <= 1.0 or math.isnan(alpha):
            raise ValueError(f"data.alpha={alpha} must be in [0, 1]")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if alpha > 0 and not real:
            raise ValueError(f"data.alpha={alpha} > 0 but no real dataset was given (data.real)")
        if alpha < 1 and not sim:
            raise ValueError(f"data.alpha={alpha} < 1 but no sim dataset was given (data.sim)")
        self.alpha, self.batch_size, self.seed = alpha, batch_size, seed
        self.groups = {REAL: _Group(real, seed, REAL), SIM: _Group(sim, seed, SIM)}
        for g, name in ((REAL, "real"), (SIM, "sim")):
            if self.groups[g].datasets and len(self.groups[g]) == 0:
                raise ValueError(f"data.{name}: datasets have no frames")

    def real_drawn_before(self, k: int) -> int:
        return _round(k * self.alpha * self.batch_size)

    def n_real(self, k: int) -> int:
        return self.real_drawn_before(k + 1) - self.real_drawn_before(k)

    def schedule(self, start: int, stop: int) -> np.ndarray:
        """int64 [stop − start, B]: row k − start lists batch k's samples as positions in the frames of all real
        datasets followed by those of all sim datasets (real ones first in each row; position < len(real) ⇔ real)."""
        b, real_before = self.batch_size, self.real_drawn_before
        steps = np.arange(start, stop, dtype=np.int64)
        n_real = np.array([self.n_real(int(k)) for k in steps], dtype=np.int64)
        r0, s0 = real_before(start), start * b - real_before(start)
        real = self.groups[REAL].positions(r0, real_before(stop) - r0) if self.groups[REAL].datasets else None
        sim = self.groups[SIM].positions(s0, stop * b - real_before(stop) - s0) if self.groups[SIM].datasets else None
        col = np.arange(b, dtype=np.int64)[None, :]
        real_first = np.array([real_before(int(k)) for k in steps], dtype=np.int64)[:, None] - r0  # row's first real draw
        sim_first = steps[:, None] * b - real_first - r0 - s0  # row's first sim draw (relative)
        is_real = col < n_real[:, None]
        out = np.empty((len(steps), b), dtype=np.int64)
        if real is not None and len(real):
            out[is_real] = (real[np.minimum(real_first + col, len(real) - 1)])[is_real]
        if sim is not None and len(sim):
            n_real_frames = len(self.groups[REAL])
            picked = sim[np.clip(sim_first + col - n_real[:, None], 0, len(sim) - 1)]
            out[~is_real] = (n_real_frames + picked)[~is_real]
        return out

    def batch(self, k: int) -> dict:
        n_real_frames = len(self.groups[REAL])
        rows = self.schedule(k, k + 1)[0]
        batch = collate([self.groups[REAL].item(int(f)) if f < n_real_frames
                         else self.groups[SIM].item(int(f) - n_real_frames) for f in rows])
        batch["is_real"] = torch.arange(self.batch_size) < self.n_real(k)
        return batch

    def iterate(self, start: int = 0) -> Iterator[dict]:
        k = start
        while True:
            yield self.batch(k)
            k += 1

    def norm_stats(self) -> NormStats:
        """Statistics of the distribution the batches are drawn from (real weighted α, sim 1 − α)."""
        weighted = []
        for g, w in ((REAL, self.alpha), (SIM, 1.0 - self.alpha)):
            for d in self.groups[g].datasets:
                share = w * len(d) / max(len(self.groups[g]), 1)
                rows = d.frames  # the frames the batches are drawn from
                weighted.append((share, {STATE_KEY: d.store.state[rows], ACTION_KEY: d.store.action[rows]}))
        return NormStats.from_arrays(weighted)
