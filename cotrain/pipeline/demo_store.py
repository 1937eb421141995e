"""The run's demos on disk and back in memory: LeRobot datasets, or NumPy archives where LeRobot cannot write.

    <run>/demos/{sim,real_proxy}/        (format lerobot)      <run>/demos/{sim,real_proxy}.npz   (format npz)
Either way `load` returns in-memory `ChunkDataset`s: Stage I and Stage II take datasets, not paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cotrain.data import ChunkDataset, FeatureSpec, Provenance, load_dataset, store_from_episodes
from cotrain.runtime import atomic_path


def path(demo_dir: Path, domain: str, fmt: str) -> Path:
    return demo_dir / (f"{domain}.npz" if fmt == "npz" else domain)


def write(demo_dir: Path, domain: str, fmt: str, episodes) -> dict[str, int]:
    """Write expert episodes (an iterable of `ExpertEpisode`); returns {"episodes", "frames"}."""
    from cotrain.data import DatasetWriter
    from cotrain.demos import write_episodes

    target = path(demo_dir, domain, fmt)
    if fmt == "lerobot":
        import shutil

        shutil.rmtree(target, ignore_errors=True)  # a cut call's partial dataset: this step starts over
        with DatasetWriter(target, FeatureSpec(), commit_every=50) as writer:
            n = write_episodes(writer, episodes, domain)
        return {"episodes": n, "frames": len(load_dataset(target, FeatureSpec(), 1))}
    eps = list(episodes)
    frames = [f for ep in eps for f in ep.frames]
    with atomic_path(target) as tmp:
        np.savez(tmp, image=np.stack([f["image"] for f in frames]), state=np.stack([f["state"] for f in frames]),
                 action=np.stack([f["action"] for f in frames]), task=np.array([f["task"] for f in frames]),
                 length=np.array([len(ep.frames) for ep in eps]), seed=np.array([ep.seed for ep in eps]))
    return {"episodes": len(eps), "frames": len(frames)}


def load(demo_dir: Path, domain: str, fmt: str, chunk_size: int) -> ChunkDataset:
    target = path(demo_dir, domain, fmt)
    if not target.exists():
        raise FileNotFoundError(f"experiment: no {domain} demos at {target}; run the demos step first")
    if fmt == "lerobot":
        return load_dataset(target, FeatureSpec(), chunk_size)
    z = np.load(target)
    bounds = np.cumsum(z["length"])[:-1]
    cols = {k: np.split(z[k], bounds) for k in ("image", "state", "action", "task")}
    episodes = [[{"image": im, "state": st, "action": ac, "task": str(t)} for im, st, ac, t in zip(*parts)]
                for parts in zip(cols["image"], cols["state"], cols["action"], cols["task"])]
    provenance = [Provenance(domain, "expert", int(s)) for s in z["seed"]]
    return ChunkDataset(store_from_episodes(episodes, provenance), chunk_size)
