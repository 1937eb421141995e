"""Datasets: the feature spec, LeRobot (v3) read/write with provenance, the α mixture, normalisation stats.

Names are loaded on first use (PEP 562), so importing one light submodule (e.g. `cotrain.data.spec`, which the robot
bridge's message conversions use) does not import torch and LeRobot with the mixture and the reader."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_SOURCES = {
    "DatasetError": "errors",
    "FrameWeights": "frame_source",
    "Mixture": "mixture",
    "collate": "mixture",
    "Provenance": "provenance",
    "read_provenance": "provenance",
    "ChunkDataset": "reader",
    "EpisodeStore": "reader",
    "check_dataset": "reader",
    "open_lerobot": "reader",
    "store_from_episodes": "reader",
    "ACTION_KEY": "spec",
    "IMAGE_KEY": "spec",
    "STATE_KEY": "spec",
    "TASK_KEY": "spec",
    "FeatureSpec": "spec",
    "SpecMismatchError": "spec",
    "NormStats": "stats",
    "DatasetWriter": "writer",
    "load_dataset": "reader",
}

__all__ = sorted(_SOURCES)

if TYPE_CHECKING:
    from cotrain.data.errors import DatasetError
    from cotrain.data.frame_source import FrameWeights
    from cotrain.data.mixture import Mixture, collate
    from cotrain.data.provenance import Provenance, read_provenance
    from cotrain.data.reader import (ChunkDataset, EpisodeStore, check_dataset, load_dataset, open_lerobot,
                                     store_from_episodes)
    from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec, SpecMismatchError
    from cotrain.data.stats import NormStats
    from cotrain.data.writer import DatasetWriter


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
