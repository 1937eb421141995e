"""The calibration captures of `python -m cotrain.calibrate`, taken in a task's real-proxy (a simulation standing in
for the real scene) instead of on a robot: PNG frames of the empty scene with the arm at home, and the calibration
motion (one frame per joint state of `calibration_qpos`, `cotrain.calibration.motion`). The real demonstrations come
from `python -m cotrain.demos domain=real_proxy`.

    python -m cotrain.calibration.real_proxy_capture --task pick_place --out captures/real_proxy
    # writes captures/real_proxy/background/frame_000.png … and captures/real_proxy/motion.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

BACKGROUND_SEED = 0
MOTION_SEED = 10
"""Episode seeds of the captures (each frame after a reset of its own: its own sensor noise)."""


def capture(task: str, out: str | Path, frames: int = 3) -> tuple[Path, Path]:
    """Write `out/background/` (`frames` PNGs) and `out/motion.npz`; returns their paths."""
    from cotrain.calibration.background_frames import save_frames
    from cotrain.calibration.motion import calibration_qpos, save_motion
    from cotrain.calibration.twin_render import capture_background, capture_motion
    from cotrain.envs import load_task_config, make_task_env

    if frames < 1:
        raise ValueError(f"real_proxy_capture: --frames must be >= 1, got {frames}")
    out = Path(out)
    env = make_task_env(load_task_config(task), "real_proxy", obs_mode="rgb")
    try:
        background = capture_background(env, frames, seed=BACKGROUND_SEED)
        motion = capture_motion(env, calibration_qpos(), seed=MOTION_SEED)
    finally:
        env.close()
    save_frames(list(background), out / "background")
    return out / "background", save_motion(out / "motion.npz", motion, calibration_qpos())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cotrain.calibration.real_proxy_capture", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="pick_place", help="task name (configs/task/<task>.yaml) or a task yaml path")
    p.add_argument("--out", required=True, help="folder for background/ and motion.npz")
    p.add_argument("--frames", type=int, default=3, help="background frames")
    a = p.parse_args(argv)
    background, motion = capture(a.task, a.out, a.frames)
    print(f"wrote {background}/ and {motion}")


if __name__ == "__main__":
    main()
