"""Byte-level instruction tokenizer: needs no vocabulary file, no download, and never meets an unknown word.

Ids: 0 = padding, 1 = beginning of text, 2 + b for each UTF-8 byte b.
"""

from __future__ import annotations

import torch

PAD_ID = 0
BOS_ID = 1
VOCAB_SIZE = 2 + 256


def encode_tasks(tasks: list[str], max_tokens: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (ids [B, L] int64, pad_mask [B, L] bool, True at padding) with L the longest instruction (+BOS) in the batch."""
    if isinstance(tasks, str) or not all(isinstance(t, str) for t in tasks):
        raise TypeError(f"task: expected a list of strings, got {type(tasks).__name__}")
    encoded = [[BOS_ID] + [2 + b for b in t.encode("utf-8")] for t in tasks]
    too_long = [t for t, e in zip(tasks, encoded) if len(e) > max_tokens]
    if too_long:
        raise ValueError(f"task: instruction {too_long[0]!r} is {len(too_long[0].encode())} bytes, the policy takes at most "
                         f"{max_tokens - 1} (config max_text_tokens={max_tokens})")
    length = max(len(e) for e in encoded)
    ids = torch.full((len(tasks), length), PAD_ID, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e)
    ids = ids.to(device) if device is not None else ids
    return ids, ids == PAD_ID
