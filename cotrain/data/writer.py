"""Append episodes to a LeRobot (v3) dataset, each commit atomic.

LeRobot keeps its parquet writers open across episodes and writes their footers only in `finalize()`, so a
process killed mid-recording would leave every episode since the last finalize unreadable. Here every commit
works on a staging copy of the dataset and swaps it in with renames (the layout: `cotrain.data.layout`).
A kill at any point leaves `root` holding exactly the episodes of the last finished commit.
`commit_every=1` (the recorder) commits each episode; generators of many demos commit in batches.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from cotrain.data.layout import VIDEO_BACKEND, lerobot_env, old_path, recover, staging_path
from cotrain.data.provenance import Provenance, append_provenance
from cotrain.data.reader import check_dataset
from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec

log = logging.getLogger(__name__)


class DatasetWriter:
    """Write episodes of `spec`-shaped frames into the LeRobot dataset at `root` (created if absent).

    Usage:
        with DatasetWriter(root, spec) as w:
            for frame in episode: w.add_frame(image, state, action, task)
            w.save_episode(Provenance("sim", "expert", seed))
    """

    def __init__(
        self,
        root: str | Path,
        spec: FeatureSpec,
        commit_every: int = 1,
        use_video: bool = True,
        repo_id: str | None = None,
    ) -> None:
        if commit_every < 1:
            raise ValueError(f"commit_every={commit_every} must be >= 1")
        self.root = Path(root).absolute()
        self.spec = spec
        self.commit_every = commit_every
        self.use_video = use_video
        self.repo_id = repo_id or f"local/{self.root.name}"
        self._ds = None  # LeRobotDataset open on the staging copy
        self._frames: list[dict] = []
        self._pending: list[Provenance] = []
        recover(self.root)
        if self.root.exists():
            check_dataset(self.root, spec)  # refuse to append to a mismatching dataset

    # ---- frames -------------------------------------------------------------------------------------
    def add_frame(self, image: np.ndarray, state: np.ndarray, action: np.ndarray, task: str) -> None:
        s = self.spec
        image = np.asarray(image)
        if image.shape != s.image_shape or image.dtype != np.uint8:
            raise ValueError(f"{IMAGE_KEY}: expected uint8 {s.image_shape}, got {image.dtype} {image.shape}")
        state = np.asarray(state, dtype=np.float32)
        action = np.asarray(action, dtype=np.float32)
        for key, arr, dim in ((STATE_KEY, state, s.state_dim), (ACTION_KEY, action, s.action_dim)):
            if arr.shape != (dim,):
                raise ValueError(f"{key}: expected shape ({dim},), got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{key}: non-finite values {arr.tolist()}")
        if not task:
            raise ValueError(f"{TASK_KEY}: empty instruction")
        self._frames.append({IMAGE_KEY: image, STATE_KEY: state, ACTION_KEY: action, TASK_KEY: task})

    def discard_episode(self) -> None:
        """Drop the frames added since the last `save_episode`."""
        self._frames = []

    @property
    def num_frames_buffered(self) -> int:
        return len(self._frames)

    # ---- episodes -----------------------------------------------------------------------------------
    def save_episode(self, provenance: Provenance) -> int:
        """Queue the buffered frames as one episode; commit when `commit_every` episodes are queued.

        Returns the episode's index in the dataset.
        """
        if not self._frames:
            raise ValueError("save_episode: no frames added since the last episode")
        ds = self._open_staging()
        for frame in self._frames:
            ds.add_frame(frame)
        index = ds.meta.total_episodes
        ds.save_episode()
        append_provenance(staging_path(self.root), index, provenance)
        self._frames = []
        self._pending.append(provenance)
        if len(self._pending) >= self.commit_every:
            self.commit()
        return index

    def commit(self) -> None:
        """Finalize the staging copy and swap it in: the queued episodes become visible at once."""
        if self._ds is None:
            return
        self._ds.finalize()
        self._ds = None
        staging, old = staging_path(self.root), old_path(self.root)
        if self.root.exists():
            self.root.rename(old)
        staging.rename(self.root)
        shutil.rmtree(old, ignore_errors=True)
        log.info("committed %d episode(s) to %s", len(self._pending), self.root)
        self._pending = []

    def close(self) -> None:
        """Commit queued episodes; frames of an unsaved episode are dropped."""
        self.commit()

    def abort(self) -> None:
        """Drop queued, uncommitted episodes; `root` keeps what was committed."""
        self._ds = None
        self._frames, self._pending = [], []
        shutil.rmtree(staging_path(self.root), ignore_errors=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_staging(self):
        if self._ds is not None:
            return self._ds
        lerobot_env()
        import datasets
        from lerobot.datasets import LeRobotDataset

        datasets.disable_progress_bars()  # one "Map" bar per episode otherwise
        staging = staging_path(self.root)
        shutil.rmtree(staging, ignore_errors=True)
        if self.root.exists():
            shutil.copytree(self.root, staging)
            self._ds = LeRobotDataset.resume(self.repo_id, root=staging, video_backend=VIDEO_BACKEND)
        else:
            staging.parent.mkdir(parents=True, exist_ok=True)
            self._ds = LeRobotDataset.create(
                self.repo_id,
                fps=self.spec.fps,
                features=self.spec.lerobot_features(self.use_video),
                root=staging,
                use_videos=self.use_video,
                video_backend=VIDEO_BACKEND,
            )
        return self._ds
