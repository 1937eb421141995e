"""A dataset's on-disk layout during an atomic commit, and how LeRobot is opened on it.

    root            the committed dataset (what readers see)
    .root.staging   copy of root + the new episodes, finalized by LeRobot, then renamed to root
    .root.old       root during the swap; restored by `recover()` if a crash falls between the two renames

Readers call `recover` before opening a dataset; the writer (`cotrain.data.writer`) performs the swap.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

VIDEO_BACKEND = "pyav"  # decoding without system FFmpeg (torchcodec needs it)


def staging_path(root: Path) -> Path:
    return root.parent / f".{root.name}.staging"


def old_path(root: Path) -> Path:
    return root.parent / f".{root.name}.old"


def recover(root: Path) -> None:
    """Finish or roll back an interrupted swap and drop an unfinished staging copy."""
    root, old = Path(root), old_path(Path(root))
    if not root.exists() and old.exists():
        old.rename(root)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging_path(root), ignore_errors=True)


def lerobot_env() -> None:
    """Environment defaults for LeRobot's dataset code; call before importing it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: every dataset here is local
    os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder prints its config per episode at its default level
