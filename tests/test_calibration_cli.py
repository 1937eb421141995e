"""`python -m cotrain.calibrate`: bad input is one error line; a run on real-proxy frames, motion and demos writes
its outputs (the twin's camera, palette and action latency), scored against the real-proxy."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "cotrain.calibrate", *args, f"hydra.run.dir={cwd}/hydra"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_no_frames_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run(f"background_dir={tmp_path}/empty", f"out={tmp_path}/out", cwd=tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == f"calibrate: background_dir: no frames (*.png) in {tmp_path}/empty"
    assert not (tmp_path / "out").exists()


def test_frames_of_the_wrong_size_are_one_error_line(tmp_path):
    (tmp_path / "bg").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "bg" / "0.png")
    r = run(f"background_dir={tmp_path}/bg", f"out={tmp_path}/out", cwd=tmp_path)
    assert r.returncode != 0
    assert "frames must be [N, 128, 128, 3] (the camera's size), got [1, 32, 32, 3]" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


DEMO_SEEDS = range(8)
N_DEMOS = 3
POSITION_TOL = 0.015
"""Estimated object xy (the TCP at the grasp) against the real-proxy's true xy at frame 0 (m)."""
TRAY_TOL = 0.025
"""Estimated tray xy (the TCP at the release) against the true one (m): the expert releases within 2 cm of the
tray's centre."""
COLOR_TOL = 0.06
"""The twin's render with the estimated palette against the real-proxy's observed colour (max per channel, [0, 1])."""


@pytest.fixture(scope="module")
def real_capture(tmp_path_factory):
    """What a real robot gives, from the real-proxy (a simulation): 3 empty-scene frames, the calibration motion and
    a LeRobot dataset of 3 successful expert demos (images, states, commanded actions, task texts); plus, to score
    only, each demo's true object and tray poses at frame 0 and the real-proxy's own masks of them."""
    from cotrain.calibration.motion import calibration_qpos, save_motion
    from cotrain.calibration.twin_render import capture_background, capture_motion, render_labelled
    from cotrain.data import DatasetWriter, FeatureSpec
    from cotrain.demos import write_episodes
    from cotrain.envs import load_task_config, make_expert, make_task_env, run_expert_episode

    root = tmp_path_factory.mktemp("capture")
    env = make_task_env(load_task_config("pick_place"), "real_proxy", obs_mode="rgb")
    (root / "bg").mkdir()
    for i, frame in enumerate(capture_background(env, 3)):  # the capture: the robot at home, the scene empty
        Image.fromarray(frame).save(root / "bg" / f"{i}.png")
    save_motion(root / "motion.npz", capture_motion(env, calibration_qpos(), seed=10), calibration_qpos())
    expert, episodes, truth = make_expert("pick_place", env.domain), [], []
    for seed in DEMO_SEEDS:
        episode = run_expert_episode(env, expert, seed)
        if not episode.success:
            continue
        env.reset(seed=seed)  # frame 0 again, to score: the true poses and the real-proxy's masks
        obj = env.objects[int(env._shape_idx[0])]
        _, seg, _ = render_labelled(env)
        truth.append(dict(object=obj.pose.raw_pose[0].numpy(), tray_xy=env.tray.pose.p[0, :2].numpy(),
                          object_mask=seg == int(obj.per_scene_id[0]), tray_mask=seg == int(env.tray.per_scene_id[0]),
                          frame=episode.frames[0]["image"], task=episode.frames[0]["task"]))
        episodes.append(episode)
        if len(episodes) == N_DEMOS:
            break
    env.close()
    assert len(episodes) == N_DEMOS
    with DatasetWriter(root / "demos", FeatureSpec(), commit_every=N_DEMOS) as writer:
        write_episodes(writer, episodes, "real_proxy")
    return root, truth


def test_demo_scenes_put_the_objects_where_the_real_proxy_had_them(real_capture):
    from cotrain.calibrate import load_demos
    from cotrain.calibration.demo_scene import demo_scenes
    from cotrain.envs.pick_place import parse_instruction

    root, truth = real_capture
    scenes = demo_scenes(load_demos(str(root / "demos")), "demos")
    assert len(scenes) == len(truth)
    for (scene, frame), true in zip(scenes, truth):
        assert (scene.color, scene.shape) == parse_instruction(true["task"])
        assert np.linalg.norm(np.subtract(scene.object_xy, true["object"][:2])) < POSITION_TOL
        assert np.linalg.norm(np.subtract(scene.tray_xy, true["tray_xy"])) < TRAY_TOL
        assert np.abs(frame.astype(int) - true["frame"]).mean() < 3  # frame 0, through the dataset's video codec


def color_errors(twin, truth, palette: dict) -> dict[str, float]:
    """Score: per palette name, max per channel |twin's colour - real-proxy's colour|, the twin rendering each demo's
    true poses with `palette`, each colour pooled over the demos that show it (as the estimate) under the twin's
    masks and under the real-proxy's own masks on its frame 0."""
    from cotrain.calibration.colors import object_color
    from cotrain.calibration.demo_scene import DemoScene
    from cotrain.calibration.twin_render import render_labelled, show_demo_scene
    from cotrain.envs.pick_place import parse_instruction
    from cotrain.envs.scene import set_color

    twin_px, real_px = {}, {}
    for t in truth:
        color, shape = parse_instruction(t["task"])
        yaw = float(2 * np.arctan2(t["object"][6], t["object"][3]))  # pose [x, y, z, qw, qx, qy, qz], about z
        scene = DemoScene(episode=0, color=color, shape=shape, object_xy=tuple(t["object"][:2]), object_yaw=yaw,
                          tray_xy=tuple(t["tray_xy"]), grasp_step=0, release_step=0)
        obj_id, tray_id = show_demo_scene(twin, scene)
        set_color(twin.objects[twin.shape_names.index(shape)], palette[color], [0])
        set_color(twin.tray, palette["tray"], [0])
        _, seg, rgb = render_labelled(twin)
        for name, i, real_mask in ((color, obj_id, t["object_mask"]), ("tray", tray_id, t["tray_mask"])):
            twin_px.setdefault(name, []).append((rgb, seg == i))
            real_px.setdefault(name, []).append((t["frame"], real_mask))

    def pooled(pairs):
        return np.array(object_color(np.stack([f for f, _ in pairs]), np.stack([m for _, m in pairs]))[0])

    return {name: float(np.abs(pooled(twin_px[name]) - pooled(real_px[name])).max()) for name in twin_px}


def test_a_run_on_real_proxy_frames_writes_the_twin_config_and_overlays(real_capture, tmp_path):
    """The camera from the motion, the action latency and the palette from the demos. Scored against the
    real-proxy (tolerance COLOR_TOL): measured with 3 demos, max per-channel error with the sim palette red 0.090,
    blue 0.137, tray 0.302; with the estimate 0.027, 0.012, 0.012."""
    from cotrain.calibration.twin_render import render_labelled
    from cotrain.data.spec import IMAGE_KEY
    from cotrain.envs import load_task_config, make_task_env
    from cotrain.envs.pick_place import parse_instruction

    root, truth = real_capture
    r = run(f"background_dir={root}/bg", f"motion={root}/motion.npz", f"dataset={root}/demos", f"out={tmp_path}/out",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "camera: eye" in r.stdout and "residual (mean silhouette distance)" in r.stdout
    assert "colour tray: real" in r.stdout and "action latency:" in r.stdout
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["background.png", "overlay_after.png", "overlay_before.png",
                                                    "pick_place.yaml"]
    data = yaml.safe_load((out / "pick_place.yaml").read_text())
    assert set(data["domains"]) == {"sim", "real_proxy", "twin"}
    assert data["randomization"]["friction"] == 0.3  # configs/calibrate.yaml's ranges, around the twin
    assert data["domains"]["twin"]["background"] == "background.png"  # next to the yaml
    twin_dom, sim_dom = data["domains"]["twin"], data["domains"]["sim"]
    assert twin_dom["action_latency_steps"] in (1, 2)  # the real-proxy's delays: 1 or 2 steps (latency + jitter)
    seen = {parse_instruction(t["task"])[0] for t in truth} | {"tray"}
    assert {k for k in twin_dom["palette"] if twin_dom["palette"][k] != sim_dom["palette"][k]} == seen
    twin = make_task_env(load_task_config(out / "pick_place.yaml"), "twin", obs_mode="rgb")  # loads strictly
    try:
        frame = twin.reset(seed=0)[0][IMAGE_KEY][0].numpy()
        _, seg, _ = render_labelled(twin)
        scenery = np.isin(seg, [0, *(int(twin.scene.actors[n].per_scene_id[0]) for n in ("table", "ground"))])
        background = np.asarray(Image.open(out / "background.png"))
        assert scenery.mean() > 0.3
        np.testing.assert_array_equal(frame[scenery], background[scenery])  # the real scene behind the twin's robot
        errors = {name: color_errors(twin, truth, data["domains"][name]["palette"]) for name in ("sim", "twin")}
    finally:
        twin.close()
    print("max |twin render - real| per channel:", errors)
    assert all(e < COLOR_TOL for e in errors["twin"].values()), errors
    assert errors["sim"]["tray"] > 0.2, errors  # the sim's tray is dark grey, the real one light
    assert all(e >= COLOR_TOL for e in errors["sim"].values()), errors


def test_an_unknown_randomization_key_is_one_error_line(tmp_path):
    (tmp_path / "bg").mkdir()
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(tmp_path / "bg" / "0.png")
    r = run(f"background_dir={tmp_path}/bg", "+randomization.fog=0.1", f"out={tmp_path}/out", cwd=tmp_path)
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "randomization: unknown key(s) ['fog'] for RandomizationRanges; known keys: ['camera_eye'," in line
    assert not (tmp_path / "out").exists()
