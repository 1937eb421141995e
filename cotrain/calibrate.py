"""Calibrate the twin against the real scene from what a real robot gives, and write a task config with a `twin`
domain (the `sim` domain with the calibrated camera, object colours, action latency and the greenscreen
background) plus the background and overlay PNGs.

    python -m cotrain.calibrate task=pick_place background_dir=captures/empty_scene motion=captures/motion.npz \
        dataset=datasets/real/pick_place

Reads only: PNG frames of the empty scene from the robot's camera (robot at home), the calibration motion (frames
with the arm at recorded joint states, `cotrain.calibration.motion`) and the real demonstrations (LeRobot dataset:
images, states, commanded actions and task texts). Prints each estimate with its residual. From the demos: the
action latency (written as the twin's `action_latency_steps`) and, on pick_place, the palette values of the object
colours and the tray seen in them (`cotrain.calibration.demo_scene` finds where the objects were at frame 0; the
twin renders that scene at the calibrated camera and `cotrain.calibration.colors` fits its palette to the real
frame 0 under the rendered masks); colours the demos never show keep the sim's values.
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
    """Real demonstrations (LeRobot dataset root) for the action latency, the end-effector response and, on
    pick_place, the object and tray colours; None skips them."""
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


def load_demos(root: str):
    """The real demonstrations (`EpisodeStore`): images, states, commanded actions, task texts."""
    from cotrain.data import FeatureSpec
    from cotrain.data.reader import EpisodeStore

    return EpisodeStore.load(root, FeatureSpec())


def dynamics_from_demos(store, max_lag: int):
    """(action latency, end-effector response) from the demos' states and actions, split by episode."""
    from cotrain.calibration.latency import estimate_latency
    from cotrain.calibration.response import estimate_response
    from cotrain.envs.base import CONTROL_FREQ

    episodes = [np.flatnonzero(store.episode_index == e) for e in np.unique(store.episode_index)]
    actions, states = [store.action[r] for r in episodes], [store.state[r] for r in episodes]
    latency = estimate_latency(actions, states, max_lag)
    return latency, estimate_response(actions, states, latency.steps, dt=1.0 / CONTROL_FREQ)


def colors_from_demos(twin_cfg, scenes: list, iterations: int = 3) -> list:
    """The twin palette values (`colors.ColorEstimate`) of the object colours and the tray seen in the demos'
    first frames: each scene (`demo_scene.DemoScene`, real frame 0) rendered in the `twin` domain of `twin_cfg`
    (without a greenscreen background), its object and tray masks laid on the real frame."""
    from cotrain.calibration.colors import fit_palette
    from cotrain.calibration.errors import CalibrationError
    from cotrain.calibration.twin_render import render_labelled, show_demo_scene
    from cotrain.envs import make_task_env
    from cotrain.envs.scene import set_color

    palette = twin_cfg.domain("twin").palette
    envs: dict[str, Any] = {}

    def env_for(shape: str):
        name = next((v for v, var in twin_cfg.variations.items() if shape in var.shapes), None)
        if name is None:
            raise CalibrationError(f"demo object shape {shape!r} is in no variation of the task config")
        if name not in envs:
            envs[name] = make_task_env(twin_cfg, "twin", variation=name, obs_mode="rgb")
            envs[name].reset(seed=0)
        return envs[name]

    for scene, _ in scenes:
        if scene.color not in palette:
            raise CalibrationError(f"demo episode {scene.episode}: colour {scene.color!r} is not in the palette "
                                   f"({', '.join(palette)})")

    def draw(scene, colors: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb, object mask, tray mask) of the twin's render of one scene with palette `colors`."""
        env = env_for(scene.shape)
        obj_id, tray_id = show_demo_scene(env, scene)
        set_color(env.objects[env.shape_names.index(scene.shape)], colors[scene.color], [0])
        set_color(env.tray, colors["tray"], [0])
        _, seg, rgb = render_labelled(env)
        return rgb, seg == obj_id, seg == tray_id

    try:
        drawn = [draw(scene, palette) for scene, _ in scenes]  # the masks: geometry only, the same at any palette
        masks = {name: np.zeros((len(scenes), *drawn[0][1].shape), bool)
                 for name in dict.fromkeys([s.color for s, _ in scenes] + ["tray"])}
        for i, ((scene, _), (_, obj, tray)) in enumerate(zip(scenes, drawn)):
            masks[scene.color][i], masks["tray"][i] = obj, tray
        frames = np.stack([frame for _, frame in scenes])
        return fit_palette(lambda colors: np.stack([draw(s, colors)[0] for s, _ in scenes]), frames, masks, palette,
                           iterations)
    finally:
        for env in envs.values():
            env.close()


BACKGROUND_FILE = "background.png"
"""The greenscreen background, written next to the calibrated task config, which the `twin` domain names."""


def twin_task_dict(task_cfg, camera, randomization, background: str = "", palette: dict | None = None,
                   latency_steps: int | None = None) -> dict:
    """The task config as a plain mapping with a `twin` domain: `sim` with the calibrated camera offsets (the sim's
    own when `camera` is None), the greenscreen `background` (a path relative to the written yaml; "": none), the
    estimated `palette` entries (the others keep the sim's) and action latency (None: the sim's), and the
    randomisation ranges (half-widths around the twin's values). The fov is shared by all domains of a task config,
    so the estimated fov is printed, not written."""
    cam = task_cfg.camera
    distance = float(np.linalg.norm(np.subtract(cam.target, cam.eye)))
    sim = task_cfg.domain("sim")
    twin = dataclasses.replace(sim, background=background, palette={**sim.palette, **(palette or {})},
                               action_latency_steps=sim.action_latency_steps if latency_steps is None
                               else latency_steps)
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
    from cotrain.calibration.twin_render import calibration_render_config, silhouette_points
    from cotrain.envs import make_task_env

    env = make_task_env(calibration_render_config(task_cfg), "sim", obs_mode="rgb")
    try:
        env.reset(seed=0)
        robot, moving = silhouette_points(env, motion.qpos)
    finally:
        env.close()
    cam, dom = task_cfg.camera, task_cfg.domain("sim")
    initial = CameraPose.look_at(np.add(cam.eye, dom.camera_eye_offset), np.add(cam.target, dom.camera_target_offset),
                                 cam.fov)
    views = [SilhouetteView(change_mask(f, background), home, moved) for f, (home, moved) in zip(motion.frames, moving)]
    return fit_camera(initial, views, robot), initial


def calibrate(cfg: CalibrateConfig) -> dict:
    from cotrain.calibration.camera_pose import angle_between
    from cotrain.calibration.demo_scene import demo_scenes
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
    store = load_demos(cfg.dataset) if cfg.dataset else None
    latency, response = dynamics_from_demos(store, cfg.max_latency) if store is not None else (None, None)
    scenes = demo_scenes(store, cfg.dataset) if store is not None and task_cfg.task == "pick_place" else None
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
        print(f"action latency: {latency.steps} steps (written to the twin); residual (1 - correlation) "
              f"{latency.residual:.4f}")
        print(f"end-effector response: time constant {response.time_constant:.3f} s (beta {response.beta:.3f}), "
              f"gain {response.gain:.3f}; residual (1 - R^2) {response.residual:.4f}; friction and mass: not "
              f"identifiable from demos (randomise them)")
    camera = fit.camera if fit is not None else None
    colors = []
    if scenes is not None:
        colors = colors_from_demos(TaskConfig.from_dict(twin_task_dict(task_cfg, camera, ranges), source="twin"),
                                   scenes)
        for c in colors:
            print(f"colour {c.name}: real {_rounded(c.observed)} (spread {c.spread:.3f}) -> palette "
                  f"{_rounded(c.rgba)} (sim {_rounded(task_cfg.domain('sim').palette[c.name])}); twin render "
                  f"{_rounded(c.rendered)}, residual (max |render - real|) {c.residual:.3f} (before "
                  f"{c.error_before:.3f})")
    else:
        print("object colours: not estimated (they need pick_place demos: dataset=)")
    palette = {c.name: c.rgba for c in colors}
    steps = latency.steps if latency is not None else None
    before = render_home(task_cfg, "sim")  # the overlays show the twin's own render, so without the background
    after = render_home(TaskConfig.from_dict(twin_task_dict(task_cfg, camera, ranges, palette=palette,
                                                            latency_steps=steps), source="calibrated"), "twin")
    write_overlay(out / "overlay_before.png", background, before)
    write_overlay(out / "overlay_after.png", background, after)
    from PIL import Image

    with atomic_path(out / BACKGROUND_FILE) as tmp:
        Image.fromarray(background).save(tmp)
    twin = twin_task_dict(task_cfg, camera, ranges, background=BACKGROUND_FILE, palette=palette,
                          latency_steps=steps)
    with atomic_path(out / f"{task_cfg.task}.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(twin, sort_keys=False))
    return {"camera": fit, "latency": latency, "response": response, "colors": colors}


def _rounded(values) -> list[float]:
    return [round(float(v), 3) for v in values]


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
