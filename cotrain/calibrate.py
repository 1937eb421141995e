"""Calibrate the twin against the real scene from what a real robot gives, and write a task config with a `twin`
domain (the `sim` domain with the calibrated camera and the greenscreen background) plus the background and overlay
PNGs.

    python -m cotrain.calibrate task=pick_place background_dir=captures/empty_scene motion=captures/motion.npz \
        dataset=datasets/real/pick_place

Reads only: PNG frames of the empty scene from the robot's camera (robot at home), the calibration motion (frames
with the arm at recorded joint states, `cotrain.calibration.motion`) and the real demonstrations (LeRobot dataset:
states and commanded actions). Prints each estimate with its residual. Object colours are not estimated here yet
(`cotrain.calibration.colors` is ready; it needs the twin's object masks at the demo states).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import yaml
from omegaconf import OmegaConf

from cotrain.config import register_schema

log = logging.getLogger("cotrain.calibrate")


@dataclass
class CalibrateConfig:
    task: dict[str, Any] = field(default_factory=dict)
    """Task config (configs/task/*.yaml) whose `sim` domain is calibrated."""
    background_dir: str = "???"
    """Folder of PNG frames of the empty scene from the robot's camera, robot at home (the camera's size)."""
    motion: str | None = None
    """Calibration motion (`.npz`: frames and joint states, `cotrain.calibration.motion`) for the camera pose and
    fov; None keeps the twin's camera."""
    dataset: str | None = None
    """Real demonstrations (LeRobot dataset root) for the action latency; None skips it."""
    max_latency: int = 5
    """Largest latency (control steps) considered."""
    randomization: dict[str, Any] = field(default_factory=dict)
    """Half-widths of the randomisation written into the calibrated task config (keys of
    `cotrain.calibration.randomization.RandomizationRanges`), around the calibrated `twin` values."""
    out: str = "runs/calibration"
    """Where the calibrated task config, background and overlay PNGs are written."""


register_schema("calibrate_schema", CalibrateConfig)


def read_frames(folder: str | Path) -> np.ndarray:
    """The PNG frames of a folder, uint8 [N, H, W, 3] (sorted by name); a missing folder is one error."""
    from PIL import Image

    from cotrain.calibration.errors import CalibrationError

    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"background_dir: {folder} is not a folder")
    paths = sorted(folder.glob("*.png"))
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    if not frames:
        raise CalibrationError(f"background_dir: no frames (*.png) in {folder}")
    if len({f.shape for f in frames}) > 1:
        raise CalibrationError(f"background_dir: frames of different sizes in {folder}")
    return np.stack(frames)


def dynamics_from_dataset(root: str, max_lag: int):
    """(action latency, end-effector response) from a LeRobot dataset's states and actions, split by episode."""
    from cotrain.calibration.latency import estimate_latency
    from cotrain.calibration.response import estimate_response
    from cotrain.data import FeatureSpec
    from cotrain.data.reader import EpisodeStore
    from cotrain.envs.base import CONTROL_FREQ

    store = EpisodeStore.load(root, FeatureSpec())
    episodes = [np.flatnonzero(store.episode_index == e) for e in np.unique(store.episode_index)]
    actions, states = [store.action[r] for r in episodes], [store.state[r] for r in episodes]
    latency = estimate_latency(actions, states, max_lag)
    return latency, estimate_response(actions, states, latency.steps, dt=1.0 / CONTROL_FREQ)


BACKGROUND_FILE = "background.png"
"""The greenscreen background, written next to the calibrated task config, which the `twin` domain names."""


def twin_task_dict(task_cfg, camera, randomization, background: str = "") -> dict:
    """The task config as a plain mapping with a `twin` domain: `sim` with the calibrated camera offsets (the sim's
    own when `camera` is None) and the greenscreen `background` (a path relative to the written yaml; "": none), and
    the randomisation ranges (half-widths around the twin's values). The fov is shared by all domains of a task
    config, so the estimated fov is printed, not written."""
    cam = task_cfg.camera
    distance = float(np.linalg.norm(np.subtract(cam.target, cam.eye)))
    twin = dataclasses.replace(task_cfg.domain("sim"), background=background)
    if camera is not None:
        twin = dataclasses.replace(
            twin, camera_eye_offset=tuple(float(x) for x in np.subtract(camera.eye, cam.eye)),
            camera_target_offset=tuple(float(x) for x in camera.target(distance) - np.asarray(cam.target)))
    data = dataclasses.asdict(dataclasses.replace(task_cfg, domains={**task_cfg.domains, "twin": twin},
                                                  randomization=randomization))
    data.pop("source")
    return _plain(data)


def _plain(value):
    """Tuples as lists, recursively (what yaml.safe_dump writes)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def render_home(task_cfg, domain: str) -> np.ndarray:
    """The twin's rgb at home with the empty scene, in `domain`."""
    from cotrain.calibration.twin_render import render_labelled, show_empty_scene_at_home
    from cotrain.envs import make_task_env

    env = make_task_env(task_cfg, domain, obs_mode="rgb")
    try:
        env.reset(seed=0)
        show_empty_scene_at_home(env)
        return render_labelled(env)[2]
    finally:
        env.close()


def camera_from_motion(task_cfg, background: np.ndarray, motion):
    """The silhouette fit of the camera (`cotrain.calibration.silhouette`) from the twin's `sim` camera."""
    from cotrain.calibration.camera_pose import CameraPose
    from cotrain.calibration.silhouette import SilhouetteView, change_mask, fit_camera
    from cotrain.calibration.twin_render import calibration_render_config, moving_link_points
    from cotrain.envs import make_task_env

    env = make_task_env(calibration_render_config(task_cfg), "sim", obs_mode="rgb")
    try:
        env.reset(seed=0)
        points = moving_link_points(env, motion.qpos)
    finally:
        env.close()
    cam, dom = task_cfg.camera, task_cfg.domain("sim")
    initial = CameraPose.look_at(np.add(cam.eye, dom.camera_eye_offset), np.add(cam.target, dom.camera_target_offset),
                                 cam.fov)
    views = [SilhouetteView(change_mask(f, background), p) for f, p in zip(motion.frames, points)]
    return fit_camera(initial, views), initial


def calibrate(cfg: CalibrateConfig) -> dict:
    from cotrain.calibration.camera_pose import angle_between
    from cotrain.calibration.greenscreen import median_background
    from cotrain.calibration.motion import load_motion
    from cotrain.calibration.overlay import write_overlay
    from cotrain.envs.config import TaskConfig
    from cotrain.runtime import atomic_path

    task_cfg = TaskConfig.from_dict(cfg.task, source="task")
    ranges = TaskConfig.from_dict({**cfg.task, "randomization": cfg.randomization},
                                  source="the calibrate config").randomization
    cam = task_cfg.camera
    frames = read_frames(cfg.background_dir)
    background = median_background(frames, cam.height, cam.width)
    motion = load_motion(cfg.motion, cam.height, cam.width) if cfg.motion else None
    latency, response = dynamics_from_dataset(cfg.dataset, cfg.max_latency) if cfg.dataset else (None, None)
    out = Path(cfg.out)
    fit = None
    if motion is not None:
        fit, initial = camera_from_motion(task_cfg, background, motion)
        moved = float(np.linalg.norm(np.subtract(fit.camera.eye, initial.eye)))
        print(f"camera: eye {np.round(fit.camera.eye, 4).tolist()} (moved {moved * 100:.1f} cm, turned "
              f"{math.degrees(angle_between(fit.camera, initial)):.2f} deg), fov {fit.camera.fov:.4f} rad (not "
              f"written); residual (mean silhouette distance) {fit.residual_px:.3f} px (before "
              f"{fit.initial_residual_px:.3f} px)")
    else:
        print("camera: not estimated (no motion given); the twin keeps the sim camera")
    if latency is not None:
        print(f"action latency: {latency.steps} steps; residual (1 - correlation) {latency.residual:.4f}")
        print(f"end-effector response: time constant {response.time_constant:.3f} s (beta {response.beta:.3f}), "
              f"gain {response.gain:.3f}; residual (1 - R^2) {response.residual:.4f}; friction and mass: not "
              f"identifiable from demos (randomise them)")
    camera = fit.camera if fit is not None else None
    before = render_home(task_cfg, "sim")  # the overlays show the twin's own render, so without the background
    after = render_home(TaskConfig.from_dict(twin_task_dict(task_cfg, camera, ranges), source="calibrated"), "twin")
    write_overlay(out / "overlay_before.png", background, before)
    write_overlay(out / "overlay_after.png", background, after)
    from PIL import Image

    with atomic_path(out / BACKGROUND_FILE) as tmp:
        Image.fromarray(background).save(tmp)
    twin = twin_task_dict(task_cfg, camera, ranges, background=BACKGROUND_FILE)
    with atomic_path(out / f"{task_cfg.task}.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(twin, sort_keys=False))
    return {"camera": fit, "latency": latency, "response": response}


@hydra.main(config_path="../configs", config_name="calibrate", version_base="1.3")
def main(cfg) -> None:
    from cotrain.calibration.errors import CalibrationError
    from cotrain.data.errors import DatasetError
    from cotrain.envs.config import ConfigError

    try:
        calibrate(OmegaConf.to_object(cfg))
    except (CalibrationError, ConfigError, DatasetError) as e:
        raise SystemExit(f"calibrate: {e}") from None


if __name__ == "__main__":
    main()
