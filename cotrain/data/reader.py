"""Read cotrain-spec LeRobot datasets: validate, load into memory, serve action-chunk items.

Two ways to read, with identical items:
- `open_lerobot(root, spec, chunk_size)`: LeRobot's own `LeRobotDataset` with `delta_timestamps` for the action
  chunk (decodes video per item; fine for large datasets and for checking).
- `EpisodeStore.load(root, spec)` + `ChunkDataset(store, chunk_size)`: decodes each episode's video once through
  LeRobot's decoder and keeps frames in memory (what training uses: the datasets here are small, and per-item
  video seeks would dominate a CPU training step).
Chunk semantics follow LeRobot's: actions t..t+H-1 of the same episode, indices past the episode end clamped to
its last frame and flagged in `action_is_pad`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cotrain.data.errors import DatasetError
from cotrain.data.frame_source import (INTERVENTION_KEY, FrameWeights, frame_sources, run_ends, source_counts)
from cotrain.data.layout import VIDEO_BACKEND, lerobot_env, recover
from cotrain.data.provenance import Provenance, read_provenance
from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec


def check_dataset(root: str | Path, spec: FeatureSpec) -> dict:
    """Validate a dataset's layout and features against `spec`; return its info.json. Raises DatasetError."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root does not exist")
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise DatasetError(f"{info_path}: missing (not a LeRobot dataset)")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{info_path}: unreadable JSON ({e})") from None
    features = info.get("features", {})
    for key, want in spec.lerobot_features().items():
        have = features.get(key)
        if have is None:
            raise DatasetError(f"{info_path}: feature '{key}' missing (has {sorted(features)})")
        if tuple(have["shape"]) != tuple(want["shape"]):
            raise DatasetError(
                f"{info_path}: feature '{key}' has shape {tuple(have['shape'])}, expected {tuple(want['shape'])}"
            )
        kinds = ("video", "image") if want["dtype"] in ("video", "image") else (want["dtype"],)
        if have["dtype"] not in kinds:
            raise DatasetError(f"{info_path}: feature '{key}' has dtype {have['dtype']}, expected {want['dtype']}")
    if info.get("fps") != spec.fps:
        raise DatasetError(f"{info_path}: fps {info.get('fps')}, expected {spec.fps}")
    if int(info.get("total_episodes", 0)) == 0:
        raise DatasetError(f"{root}: dataset has no episodes")
    return info


def _corrupt_file_error(root: Path, err: Exception) -> DatasetError:
    """Find which parquet file is unreadable, so the error names it."""
    import pyarrow.parquet as pq

    for path in sorted(root.rglob("*.parquet")):
        try:
            pq.ParquetFile(path).read()
        except Exception as e:  # noqa: BLE001 - any failure to read names the file
            return DatasetError(f"{path}: unreadable parquet ({type(e).__name__}: {e})")
    return DatasetError(f"{root}: cannot load dataset ({type(err).__name__}: {err})")


def open_lerobot(root: str | Path, spec: FeatureSpec, chunk_size: int):
    """LeRobot's dataset with the action chunk as `delta_timestamps` (items: CHW float images in [0, 1])."""
    lerobot_env()
    from lerobot.datasets import LeRobotDataset

    root = Path(root)
    recover(root)
    check_dataset(root, spec)
    delta = {ACTION_KEY: [i / spec.fps for i in range(chunk_size)]}
    try:
        return LeRobotDataset(
            f"local/{root.name}", root=root, delta_timestamps=delta, video_backend=VIDEO_BACKEND
        )
    except Exception as e:  # noqa: BLE001
        raise _corrupt_file_error(root, e) from None


@dataclass
class EpisodeStore:
    """All frames of one dataset in memory, in dataset order."""

    root: Path | None
    images: np.ndarray  # uint8 [N, H, W, 3]
    state: np.ndarray  # float32 [N, S]
    action: np.ndarray  # float32 [N, A]
    episode_index: np.ndarray  # int64 [N]
    episode_end: np.ndarray  # int64 [N]: one past the last frame of the frame's episode
    task: list[str]  # [N]
    provenance: dict[int, Provenance]
    intervention: np.ndarray | None = None  # bool [N]: LeRobot's per-frame `intervention` flag, if the dataset has it

    def __len__(self) -> int:
        return len(self.state)

    @property
    def num_episodes(self) -> int:
        return len(np.unique(self.episode_index))

    def sources(self) -> np.ndarray:
        """int8 [N]: each frame's source, an index into `frame_source.FRAME_SOURCES`."""
        return frame_sources(self.intervention, self.episode_index, self.provenance)

    @classmethod
    def load(cls, root: str | Path, spec: FeatureSpec) -> "EpisodeStore":
        lerobot_env()
        from lerobot.datasets import LeRobotDataset
        from lerobot.datasets.video_utils import decode_video_frames

        root = Path(root)
        recover(root)
        check_dataset(root, spec)
        try:
            ds = LeRobotDataset(f"local/{root.name}", root=root, video_backend=VIDEO_BACKEND)
            table = ds.hf_dataset.with_format(None)
            state = np.asarray(table[STATE_KEY], dtype=np.float32)
            action = np.asarray(table[ACTION_KEY], dtype=np.float32)
            episode_index = np.asarray(table["episode_index"], dtype=np.int64)
            task_index = np.asarray(table["task_index"], dtype=np.int64)
            timestamps = np.asarray(table["timestamp"], dtype=np.float64)
            intervention = (np.asarray(table[INTERVENTION_KEY], dtype=bool).reshape(-1)
                            if INTERVENTION_KEY in ds.meta.features else None)
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _corrupt_file_error(root, e) from None
        if state.shape[1:] != (spec.state_dim,) or action.shape[1:] != (spec.action_dim,):
            raise DatasetError(f"{root}/data: state {state.shape} / action {action.shape} do not match the spec")
        tasks = ds.meta.tasks.index.tolist()  # task strings, ordered by task_index
        task_of = {int(i): t for t, i in zip(tasks, ds.meta.tasks["task_index"].tolist())}

        images = np.empty((len(state), *spec.image_shape), dtype=np.uint8)
        episode_end = np.empty(len(state), dtype=np.int64)
        for ep in np.unique(episode_index):
            rows = np.flatnonzero(episode_index == ep)
            episode_end[rows] = rows[-1] + 1
            if IMAGE_KEY in ds.meta.video_keys:
                meta = ds.meta.episodes[int(ep)]
                path = root / ds.meta.get_video_file_path(int(ep), IMAGE_KEY)
                query = (meta[f"videos/{IMAGE_KEY}/from_timestamp"] + timestamps[rows]).tolist()
                try:
                    frames = decode_video_frames(path, query, ds.tolerance_s, VIDEO_BACKEND, return_uint8=True)
                except Exception as e:  # noqa: BLE001
                    raise DatasetError(f"{path}: cannot decode episode {ep} ({type(e).__name__}: {e})") from None
                images[rows] = frames.permute(0, 2, 3, 1).numpy()
            else:
                for r in rows:
                    images[r] = np.asarray(table[int(r)][IMAGE_KEY].convert("RGB"))
        return cls(
            root=root,
            images=images,
            state=state,
            action=action,
            episode_index=episode_index,
            episode_end=episode_end,
            task=[task_of[int(i)] for i in task_index],
            provenance=read_provenance(root),
            intervention=intervention,
        )


def store_from_episodes(episodes: list[list[dict]], provenance: list[Provenance] | None = None) -> EpisodeStore:
    """An in-memory store from episodes of frames {"image", "state", "action", "task"} (e.g. expert rollouts),
    without going through disk: for experiments on machines without LeRobot, and for tests. Frames may carry
    "intervention" (bool; all frames or none)."""
    if not episodes or not all(episodes):
        raise ValueError("store_from_episodes: need at least one non-empty episode")
    frames = [f for ep in episodes for f in ep]
    lengths = np.array([len(ep) for ep in episodes])
    ends = np.cumsum(lengths)
    flagged = ["intervention" in f for f in frames]
    if any(flagged) and not all(flagged):
        raise ValueError("store_from_episodes: 'intervention' given for some frames only")
    return EpisodeStore(
        root=None,
        images=np.stack([f["image"] for f in frames]).astype(np.uint8),
        state=np.stack([f["state"] for f in frames]).astype(np.float32),
        action=np.stack([f["action"] for f in frames]).astype(np.float32),
        episode_index=np.repeat(np.arange(len(episodes)), lengths),
        episode_end=np.repeat(ends, lengths),
        task=[f["task"] for f in frames],
        provenance=dict(enumerate(provenance or [])),
        intervention=np.array([bool(f["intervention"]) for f in frames]) if all(flagged) else None,
    )


class ChunkDataset(torch.utils.data.Dataset):
    """Frame t of an `EpisodeStore` with the action chunk t..t+H-1 (LeRobot's padding semantics).

    With `weights` (`FrameWeights`) only frames of positive weight are items (`frames`: their store rows, `weights`:
    their weights, for a sampler), and a chunk ends where the frames of weight 0 begin (padding after, as after the
    episode's end): e.g. HG-DAgger's human-only chunks. Without, every frame, weight 1."""

    def __init__(self, store: EpisodeStore, chunk_size: int, weights: FrameWeights | None = None) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1")
        self.store = store
        self.chunk_size = chunk_size
        if weights is None:
            w = np.ones(len(store))
            self.end = store.episode_end
        else:
            sources = store.sources()
            w = weights.of(sources)
            self.end = run_ends(w, store.episode_end)
            if not (w > 0).any():
                raise DatasetError(f"{store.root or 'in-memory dataset'}: no frame has a positive weight (frames by "
                                   f"source {source_counts(sources)}, weights {weights})")
        self.frames = np.flatnonzero(w > 0)
        self.weights = w[self.frames]

    @property
    def uniform(self) -> bool:
        """Whether every item has the same weight (a sampler may then draw uniformly)."""
        return bool(np.all(self.weights == self.weights[0]))

    def __len__(self) -> int:
        return len(self.frames)

    def chunk_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(int64 [len(store), H] store rows of each frame's action chunk, bool [len(store), H] padding)."""
        idx = np.arange(len(self.store))[:, None] + np.arange(self.chunk_size)[None, :]
        pad = idx >= self.end[:, None]
        return np.minimum(idx, self.end[:, None] - 1), pad

    def __getitem__(self, j: int) -> dict:
        s = self.store
        i = int(self.frames[j])
        idx = i + np.arange(self.chunk_size)
        pad = idx >= self.end[i]
        idx = np.minimum(idx, self.end[i] - 1)
        return {
            IMAGE_KEY: torch.from_numpy(s.images[i]),
            STATE_KEY: torch.from_numpy(s.state[i]),
            ACTION_KEY: torch.from_numpy(s.action[idx]),
            "action_is_pad": torch.from_numpy(pad),
            TASK_KEY: s.task[i],
        }


def load_dataset(root, spec: FeatureSpec, chunk_size: int, weights: FrameWeights | None = None) -> ChunkDataset:
    """A dataset on disk, in memory, as action-chunk items (`weights`: which frames, how often; see ChunkDataset)."""
    return ChunkDataset(EpisodeStore.load(root, spec), chunk_size, weights)
