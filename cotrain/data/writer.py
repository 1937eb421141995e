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

from cotrain.data.errors import DatasetError
from cotrain.data.frame_source import INTERVENTION_FEATURE, INTERVENTION_KEY
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

    `intervention=True` adds LeRobot's per-frame `intervention` flag (bool, shape (1,); `cotrain.data.frame_source`):
    every `add_frame` then says whether a human drove that frame. An existing dataset must agree (it has the
    feature exactly when `intervention` is set).
    """

    def __init__(
        self,
        root: str | Path,
        spec: FeatureSpec,
        commit_every: int = 1,
        use_video: bool = True,
        repo_id: str | None = None,
        intervention: bool = False,
    ) -> None:
        if commit_every < 1:
            raise ValueError(f"commit_every={commit_every} must be >= 1")
        self.root = Path(root).absolute()
        self.spec = spec
        self.commit_every = commit_every
        self.use_video = use_video
        self.repo_id = repo_id or f"local/{self.root.name}"
        self.intervention = intervention
        self._ds = None  # LeRobotDataset open on the staging copy
        self._frames: list[dict] = []
        self._pending: list[Provenance] = []
        recover(self.root)
        if self.root.exists():
            info = check_dataset(self.root, spec)  # refuse to append to a mismatching dataset
            if (INTERVENTION_KEY in info["features"]) != intervention:
                raise DatasetError(f"{self.root}/meta/info.json: " + (
                    f"no per-frame '{INTERVENTION_KEY}' feature; record interventions into a new dataset" if intervention
                    else f"has a per-frame '{INTERVENTION_KEY}' feature: append with intervention flags"))

    # ---- frames -------------------------------------------------------------------------------------
    def add_frame(self, image: np.ndarray, state: np.ndarray, action: np.ndarray, task: str,
                  intervention: bool | None = None) -> None:
        """One frame; `intervention` (whether a human drove it) is required exactly when the writer records it."""
        s = self.spec
        if (intervention is None) == self.intervention:
            raise ValueError(f"{INTERVENTION_KEY}: " + ("missing: this writer records who drove each frame"
                                                        if self.intervention else "given, but the writer does not record it"))
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
        frame = {IMAGE_KEY: image, STATE_KEY: state, ACTION_KEY: action, TASK_KEY: task}
        if self.intervention:
            frame[INTERVENTION_KEY] = np.array([bool(intervention)], dtype=bool)
        self._frames.append(frame)

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
                features=self.spec.lerobot_features(self.use_video)
                | ({INTERVENTION_KEY: dict(INTERVENTION_FEATURE)} if self.intervention else {}),
                root=staging,
                use_videos=self.use_video,
                video_backend=VIDEO_BACKEND,
            )
        return self._ds
