"""Import ManiSkill trajectory files (`.h5` + `.json`, as written by its RecordEpisode wrapper) into the
cotrain LeRobot layout.

Needs trajectories recorded with `obs_mode="rgb"` (or "rgb+…") and `control_mode="pd_ee_delta_pose"`, so that
actions are the 7-d Δ end-effector pose + gripper of the spec. The state is rebuilt from what ManiSkill records:
    state = [tcp xyz, tcp rpy (from the wxyz quaternion), the two finger joint positions]
ManiSkill stores T+1 observations for T actions; frame t pairs observation t with action t.

    python -m cotrain.data.maniskill_import traj.h5 datasets/sim/pick --task "pick up the cube" --domain sim
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import h5py
import numpy as np

from cotrain.data.errors import DatasetError
from cotrain.data.provenance import Provenance
from cotrain.data.rotations import quat_to_rpy
from cotrain.data.spec import FeatureSpec
from cotrain.data.writer import DatasetWriter

CONTROL_MODE = "pd_ee_delta_pose"


def _need(group: h5py.Group, key: str, where: str):
    if key not in group:
        raise DatasetError(f"{where}: missing '{group.name}/{key}' (has {sorted(group.keys())})")
    return group[key]


def tcp_pose_to_state(tcp_pose: np.ndarray, qpos: np.ndarray) -> np.ndarray:
    """[T, 7] (xyz, quaternion wxyz) and [T, n_joints] → [T, 8] (xyz, rpy, two finger positions)."""
    rpy = quat_to_rpy(tcp_pose[:, 3:7])
    return np.concatenate([tcp_pose[:, :3], rpy, qpos[:, -2:]], axis=1).astype(np.float32)


def import_maniskill(
    h5_path: str | Path,
    out_root: str | Path,
    spec: FeatureSpec,
    task: str | None = None,
    domain: str = "sim",
    source: str = "expert",
    camera: str | None = None,
    only_success: bool = False,
) -> int:
    """Append every trajectory of `h5_path` to the dataset at `out_root`; return how many were written.

    `task` is the instruction for every episode unless an episode's JSON entry has an "instruction".
    """
    h5_path = Path(h5_path)
    json_path = h5_path.with_suffix(".json")
    if not h5_path.is_file():
        raise DatasetError(f"{h5_path}: no such trajectory file")
    if not json_path.is_file():
        raise DatasetError(f"{json_path}: missing (ManiSkill writes it beside the .h5)")
    meta = json.loads(json_path.read_text())
    episodes = meta.get("episodes")
    if not episodes:
        raise DatasetError(f"{json_path}: no 'episodes'")
    written = 0
    with h5py.File(h5_path, "r") as f, DatasetWriter(out_root, spec, commit_every=len(episodes)) as writer:
        for ep in episodes:
            mode = ep.get("control_mode") or meta.get("env_info", {}).get("env_kwargs", {}).get("control_mode")
            if mode != CONTROL_MODE:
                raise DatasetError(f"{json_path}: episode {ep['episode_id']} control_mode={mode!r}, need {CONTROL_MODE!r}")
            if only_success and not ep.get("success", False):
                continue
            instruction = ep.get("instruction", task)
            if not instruction:
                raise DatasetError(f"{json_path}: episode {ep['episode_id']} has no instruction; pass task=")
            rgb, state, actions = _read_trajectory(f, ep["episode_id"], spec, camera, str(h5_path))
            for t in range(len(actions)):
                writer.add_frame(_resized(rgb[t, ..., :3], spec), state[t], actions[t], instruction)
            writer.save_episode(Provenance(domain, source, ep.get("episode_seed")))
            written += 1
    return written


def _read_trajectory(f: h5py.File, episode_id: int, spec: FeatureSpec, camera: str | None, h5_name: str):
    """(rgb [T+1, H, W, C], state [T+1, 8], actions [T, 7]) of one trajectory, each checked against the spec."""
    where = f"{h5_name}:traj_{episode_id}"
    traj = _need(f, f"traj_{episode_id}", h5_name)
    actions = np.asarray(_need(traj, "actions", where), dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] != spec.action_dim:
        raise DatasetError(f"{where}/actions: shape {actions.shape}, expected (T, {spec.action_dim})")
    obs = _need(traj, "obs", where)
    sensors = _need(obs, "sensor_data", where)
    cams = sorted(sensors.keys())
    cam = camera or (cams[0] if len(cams) == 1 else None)
    if cam not in sensors:
        raise DatasetError(f"{where}/obs/sensor_data: camera {camera!r} not among {cams}; pass camera=")
    rgb = np.asarray(_need(sensors[cam], "rgb", where))
    state = tcp_pose_to_state(
        np.asarray(_need(_need(obs, "extra", where), "tcp_pose", where)),
        np.asarray(_need(_need(obs, "agent", where), "qpos", where)),
    )
    if len(rgb) < len(actions) or len(state) < len(actions):
        raise DatasetError(f"{where}: {len(rgb)} observations for {len(actions)} actions")
    return rgb, state, actions


def _resized(img: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    if img.shape[:2] != (spec.image_height, spec.image_width):
        img = cv2.resize(img, (spec.image_width, spec.image_height), interpolation=cv2.INTER_AREA)
    return img.astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("h5")
    p.add_argument("out")
    p.add_argument("--task", default=None, help="instruction for episodes whose JSON entry has none")
    p.add_argument("--domain", default="sim", choices=("sim", "real_proxy", "real"))
    p.add_argument("--source", default="expert", choices=("expert", "teleop", "policy", "intervention"))
    p.add_argument("--camera", default=None)
    p.add_argument("--only-success", action="store_true")
    a = p.parse_args()
    n = import_maniskill(a.h5, a.out, FeatureSpec(), a.task, a.domain, a.source, a.camera, a.only_success)
    print(f"imported {n} episodes into {a.out}")


if __name__ == "__main__":
    main()
