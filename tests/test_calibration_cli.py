"""`python -m cotrain.calibrate`: bad input is one error line; a run on real-proxy frames writes its outputs."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_a_run_on_real_proxy_frames_writes_the_twin_config_and_overlays(tmp_path):
    from cotrain.calibration.motion import calibration_qpos, save_motion
    from cotrain.calibration.twin_render import capture_background, capture_motion, render_labelled
    from cotrain.data.spec import IMAGE_KEY
    from cotrain.envs import load_task_config, make_task_env

    env = make_task_env(load_task_config("pick_place"), "real_proxy", obs_mode="rgb")
    (tmp_path / "bg").mkdir()
    for i, frame in enumerate(capture_background(env, 3)):  # the capture: the robot at home, the scene empty
        Image.fromarray(frame).save(tmp_path / "bg" / f"{i}.png")
    save_motion(tmp_path / "motion.npz", capture_motion(env, calibration_qpos(), seed=10), calibration_qpos())
    env.close()
    r = run(f"background_dir={tmp_path}/bg", f"motion={tmp_path}/motion.npz", f"out={tmp_path}/out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "camera: eye" in r.stdout and "residual (mean silhouette distance)" in r.stdout
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["background.png", "overlay_after.png", "overlay_before.png",
                                                    "pick_place.yaml"]
    data = yaml.safe_load((out / "pick_place.yaml").read_text())
    assert set(data["domains"]) == {"sim", "real_proxy", "twin"}
    assert data["randomization"]["friction"] == 0.3  # configs/calibrate.yaml's ranges, around the twin
    assert data["domains"]["twin"]["background"] == "background.png"  # next to the yaml
    twin = make_task_env(load_task_config(out / "pick_place.yaml"), "twin", obs_mode="rgb")  # loads strictly
    try:
        frame = twin.reset(seed=0)[0][IMAGE_KEY][0].numpy()
        _, seg, _ = render_labelled(twin)
        scenery = np.isin(seg, [0, *(int(twin.scene.actors[n].per_scene_id[0]) for n in ("table", "ground"))])
    finally:
        twin.close()
    background = np.asarray(Image.open(out / "background.png"))
    assert scenery.mean() > 0.3
    np.testing.assert_array_equal(frame[scenery], background[scenery])  # the real scene behind the twin's robot


def test_an_unknown_randomization_key_is_one_error_line(tmp_path):
    (tmp_path / "bg").mkdir()
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(tmp_path / "bg" / "0.png")
    r = run(f"background_dir={tmp_path}/bg", "+randomization.fog=0.1", f"out={tmp_path}/out", cwd=tmp_path)
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "randomization: unknown key(s) ['fog'] for RandomizationRanges; known keys: ['camera_eye'," in line
    assert not (tmp_path / "out").exists()
