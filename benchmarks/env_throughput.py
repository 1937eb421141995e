"""Env-steps/s of the twin vector env: per-step rendering vs chunk-aware rendering (camera only at chunk ends).

    python benchmarks/env_throughput.py --workers 1 8 16 --chunk 4 8

One worker process per env (physx_cpu), torch at 1 thread per worker; random small actions, auto-reset included.
"Per-step" renders the camera after every control step (what a policy that observes every step costs);
"chunk-aware" renders only after the last step of each H-step chunk. `--state` adds the no-rendering ceiling.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from cotrain.envs import load_task_config, make_env


def measure(venv, horizon: int, render_every_step: bool, duration: float, rng: np.random.Generator) -> float:
    """Env-steps/s over at least `duration` seconds (after one warm-up chunk)."""
    def chunk():
        actions = rng.normal(0.0, 0.02, (venv.num_envs, horizon, 7)).astype(np.float32)
        actions[..., 6] = 1.0
        return int(venv.step_chunk(actions, render_every_step=render_every_step)[4]["steps"].sum())

    chunk()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        steps += chunk()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--chunk", type=int, nargs="+", default=[4, 8], help="chunk lengths H")
    parser.add_argument("--task", default="pick_place")
    parser.add_argument("--domain", default="sim")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--state", action="store_true", help="also measure state-only (no rendering) stepping")
    args = parser.parse_args()

    cfg = load_task_config(args.task)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU rendering)"
    print(f"# twin env throughput: task={args.task} domain={args.domain} image={cfg.camera.height}x{cfg.camera.width} "
          f"cpus={os.cpu_count()} gpu={gpu} python={platform.python_version()} torch={torch.__version__}")
    rng = np.random.default_rng(0)
    header = "| workers | H | per-step render (env-steps/s) | chunk-aware (env-steps/s) | speed-up |"
    rows = [header, "|---|---|---|---|---|"]
    state_rows = ["| workers | state only, no rendering (env-steps/s) |", "|---|---|"]
    for workers in args.workers:
        start = time.perf_counter()
        venv = make_env(cfg, args.domain, obs_mode="rgb", num_envs=workers, seed=0)
        venv.reset()
        print(f"# {workers} workers started in {time.perf_counter() - start:.0f} s", flush=True)
        for horizon in args.chunk:
            per_step = measure(venv, horizon, True, args.duration, rng)
            chunked = measure(venv, horizon, False, args.duration, rng)
            rows.append(f"| {workers} | {horizon} | {per_step:.0f} | {chunked:.0f} | {chunked / per_step:.2f}x |")
            print(rows[-1], flush=True)
        venv.close()
        if args.state:
            venv = make_env(cfg, args.domain, obs_mode="state", num_envs=workers, seed=0)
            venv.reset()
            state_rows.append(f"| {workers} | {measure(venv, max(args.chunk), False, args.duration, rng):.0f} |")
            print(state_rows[-1], flush=True)
            venv.close()
    print("\n".join(["", *rows] + (["", *state_rows] if args.state else [])))


if __name__ == "__main__":
    main()
