"""Datasets: the feature spec, LeRobot (v3) read/write with provenance, the α mixture, normalisation stats."""

from cotrain.data.errors import DatasetError
from cotrain.data.frame_source import FrameWeights
from cotrain.data.mixture import Mixture, collate
from cotrain.data.provenance import Provenance, read_provenance
from cotrain.data.reader import ChunkDataset, EpisodeStore, check_dataset, open_lerobot, store_from_episodes
from cotrain.data.spec import (
    ACTION_KEY,
    IMAGE_KEY,
    STATE_KEY,
    TASK_KEY,
    FeatureSpec,
    SpecMismatchError,
)
from cotrain.data.stats import NormStats
from cotrain.data.writer import DatasetWriter


def load_dataset(root, spec: FeatureSpec, chunk_size: int, weights: FrameWeights | None = None) -> ChunkDataset:
    """A dataset on disk, in memory, as action-chunk items (`weights`: which frames, how often; see ChunkDataset)."""
    return ChunkDataset(EpisodeStore.load(root, spec), chunk_size, weights)


__all__ = [
    "ACTION_KEY",
    "IMAGE_KEY",
    "STATE_KEY",
    "TASK_KEY",
    "ChunkDataset",
    "DatasetError",
    "DatasetWriter",
    "EpisodeStore",
    "FeatureSpec",
    "FrameWeights",
    "Mixture",
    "NormStats",
    "Provenance",
    "SpecMismatchError",
    "check_dataset",
    "collate",
    "load_dataset",
    "open_lerobot",
    "read_provenance",
    "store_from_episodes",
]
