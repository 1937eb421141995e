"""Small run-time helpers shared by the entry points: device choice, seeding, moving batches."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; an explicit device that is absent is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available (use device=auto or device=cpu)")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def write_json_atomic(path: Path, obj: Any) -> None:
    """`obj` as indented JSON at `path`, written to a temp name and renamed (never half a file); makes the folder."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)
