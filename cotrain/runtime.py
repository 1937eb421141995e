"""Small run-time helpers shared by the entry points: device choice, seeding, moving batches, atomic writes."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of the file `path` to write; renamed onto `path` when the block ends normally, removed
    when it raises, so readers never see half a file. Makes the folder. The name keeps `path`'s suffix (writers
    such as OpenCV's pick the format from it).

        with atomic_path(out / "results.json") as tmp:
            tmp.write_text(text)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    """`obj` as indented JSON at `path`, never half a file (`atomic_path`); makes the folder."""
    import json

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))
