"""Where a training run keeps its checkpoints, and how a checkpoint path given by a user is resolved.

    <run>/ckpt/step_<N>/   one policy checkpoint per save (`cotrain.policies.checkpoint`'s directory; N is the
                           optimizer step in Stage I, the PPO iteration in Stage II)
    <run>/ckpt/LATEST      the name of the newest complete checkpoint, replaced atomically once it is written

Every command that reads a checkpoint (`resume=`, `init=`, `ckpt=`, the bridge's `checkpoint`) accepts a policy
checkpoint directory itself (any layout, e.g. `<run>/ckpt/step_500` or a shipped checkpoint), a run's `ckpt`
directory, or the run directory; the last two mean the checkpoint LATEST names.
"""

from __future__ import annotations

from pathlib import Path

from cotrain.policies.checkpoint import MODEL_FILE
from cotrain.runtime import atomic_path

CKPT_DIR = "ckpt"
POINTER = "LATEST"
STEP_PREFIX = "step_"


def step_dir(run: str | Path, step: int) -> Path:
    """The checkpoint directory of `step` in the run directory `run`."""
    return Path(run) / CKPT_DIR / f"{STEP_PREFIX}{step}"


def step_of(ckpt: str | Path) -> int:
    """N of a `step_N` checkpoint directory."""
    name = Path(ckpt).name
    if not name.startswith(STEP_PREFIX) or not name[len(STEP_PREFIX):].isdigit():
        raise ValueError(f"checkpoint {ckpt}: expected a directory named {STEP_PREFIX}<N>")
    return int(name[len(STEP_PREFIX):])


def mark_latest(run: str | Path, step: int) -> Path:
    """Point the run's LATEST at the (complete) checkpoint of `step`; returns that checkpoint's directory."""
    ckpt = step_dir(run, step)
    if not (ckpt / MODEL_FILE).is_file():
        raise FileNotFoundError(f"checkpoint {ckpt}: no {MODEL_FILE}; LATEST may only name a complete checkpoint")
    with atomic_path(Path(run) / CKPT_DIR / POINTER) as tmp:
        tmp.write_text(ckpt.name + "\n")
    return ckpt


def latest(run: str | Path) -> Path | None:
    """The checkpoint the run's LATEST names; None when the run has saved none (no LATEST)."""
    pointer = Path(run) / CKPT_DIR / POINTER
    return _follow(pointer) if pointer.is_file() else None


def resolve(path: str | Path, key: str = "checkpoint") -> Path:
    """The policy checkpoint directory `path` means: itself, or the one LATEST names when `path` is a run's `ckpt`
    directory or the run directory. Anything else is one FileNotFoundError naming `key` and the path."""
    p = Path(path)
    if (p / MODEL_FILE).is_file():
        return p
    for pointer in (p / POINTER, p / CKPT_DIR / POINTER):
        if pointer.is_file():
            return _follow(pointer, key)
    if not p.exists():
        raise FileNotFoundError(f"{key}={path}: no such checkpoint or run directory")
    raise FileNotFoundError(f"{key}={path}: neither a checkpoint directory (no {MODEL_FILE}) nor a run with "
                            f"{CKPT_DIR}/{POINTER}")


def _follow(pointer: Path, key: str = "checkpoint") -> Path:
    name = pointer.read_text().strip()
    ckpt = pointer.parent / name
    if not name or "/" in name or not (ckpt / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{key}: {pointer} names {name!r}, which is not a complete checkpoint in "
                                f"{pointer.parent}")
    return ckpt
