"""The real-data anchor (RL-Co): PPO in the twin + β · SFT on real demonstrations, in one loss.

    L = L_ppo + β · L_sft(real batch),   L_ppo = pg_loss + vf_coef·v_loss − ent_coef·entropy

Every PPO micro-batch draws a fresh real batch from a RealBatchStream, and L goes through one backward pass
(`PPOTrainer.backward_micro_batch`, the one line where the loss is summed). The public reference implementation
computed L_sft but never backpropagated it; tests/test_anchor.py checks the gradient numerically.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, default_collate


class RealBatchStream:
    """Endless random batches of real demonstrations, resumable: the draw order lives in one torch.Generator.

    `dataset` items follow `cotrain.data.load_dataset` (image, state, action chunk, action_is_pad, task);
    batches are collated with torch's default_collate (strings → list[str]), the Policy's batch format.
    Each rank passes its own `seed` so ranks draw different demonstrations.
    `weights` (float [len(dataset)], e.g. `frame_weights` of datasets built with `FrameWeights`): item i is drawn
    with probability ∝ weights[i], so the expected anchor loss is the weight-averaged SFT loss; None: uniform.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, weights: torch.Tensor | None = None):
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("RealBatchStream: the real dataset is empty")
        if weights is not None and (weights.shape != (len(dataset),) or not (weights >= 0).all() or weights.sum() <= 0):  # type: ignore[arg-type]
            raise ValueError(f"RealBatchStream: weights must be >= 0, not all 0, one per item ({len(dataset)}), "  # type: ignore[arg-type]
                             f"got shape {tuple(weights.shape)}")
        self.dataset, self.batch_size, self.weights = dataset, batch_size, weights
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> "RealBatchStream":
        return self

    def __next__(self) -> dict[str, Any]:
        if self.weights is None:
            index = torch.randint(len(self.dataset), (self.batch_size,), generator=self.generator)  # type: ignore[arg-type]
        else:
            index = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.generator)
        return default_collate([self.dataset[i] for i in index.tolist()])

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def frame_weights(datasets) -> torch.Tensor | None:
    """The items' weights of `ChunkDataset`s concatenated in this order (float64), or None when they are all equal
    (the stream then draws uniformly, as without weights)."""
    w = torch.cat([torch.as_tensor(d.weights, dtype=torch.float64) for d in datasets])
    return None if bool((w == w[0]).all()) else w
