"""Env-steps/s of the twin envs: ManiSkill's torch maths vs cotrain's native CPU maths, and chunk-aware rendering.

    python benchmarks/env_throughput.py                                   # per core: old vs new, 4 tasks, state obs
    python benchmarks/env_throughput.py --tasks pick_place --components   # + where a step's time goes
    python benchmarks/env_throughput.py --workers 1 8 16 --chunk 4 8      # + worker processes, rendering

Per core (always): one env in this process (physx_cpu, torch at 1 thread, state observations), stepped in
H-step chunks through `EnvRunner` (what each vector-env worker runs) with random small actions and auto-reset.
"old" is the robot `panda_cotrain_maniskill` (ManiSkill's controller: pure-Python pinocchio CLIK IK and pose maths
on torch tensors; ManiSkill's state and contact maths), "new" is `panda_cotrain` (the same IK in SAPIEN's C++
pinocchio, native pose / state / contact maths). Old and new alternate `--repeats` times in the same process; the
table gives the median rate of each and their ratio. `--components` adds milliseconds per control step spent in
the controller (`agent.set_action`), the physics substeps (`scene.step`), the observation (`get_obs`),
`evaluate` (`get_info`) and the reward.

`--workers`: N worker processes (`make_env`, physx_cpu) per robot: per-step rendering vs chunk-aware rendering
(camera only after the last step of each chunk); `--state` adds state-only stepping. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections import defaultdict

import numpy as np
import torch

from cotrain.envs import TASKS, load_task_config, make_env
from cotrain.envs.robot import MANISKILL_ROBOT_UID, ROBOT_UID
from cotrain.envs.runner import EnvRunner

ROBOTS = {"old": MANISKILL_ROBOT_UID, "new": ROBOT_UID}


def random_chunk(rng: np.random.Generator, num_envs: int, horizon: int) -> np.ndarray:
    actions = rng.normal(0.0, 0.02, (num_envs, horizon, 7)).astype(np.float32)
    actions[..., 6] = 1.0
    return actions


def measure(venv, horizon: int, render_every_step: bool, duration: float, rng: np.random.Generator) -> float:
    """Env-steps/s of a vector env over at least `duration` seconds (after one warm-up chunk)."""
    def chunk():
        actions = random_chunk(rng, venv.num_envs, horizon)
        return int(venv.step_chunk(actions, render_every_step=render_every_step)[4]["steps"].sum())

    chunk()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        steps += chunk()
    return steps / (time.perf_counter() - start)


def runner_rate(runner: EnvRunner, horizon: int, steps: int, rng: np.random.Generator) -> float:
    """Env-steps/s of one `EnvRunner` over `steps` control steps (state obs, auto-reset included)."""
    done, start = 0, time.perf_counter()
    while done < steps:
        done += runner.step_chunk(random_chunk(rng, 1, horizon)[0]).steps
    return done / (time.perf_counter() - start)


COMPONENTS = {"controller": ("agent", "set_action"), "physics": ("scene", "step"), "observation": ("env", "get_obs"),
              "evaluate": ("env", "get_info"), "reward": ("env", "get_reward")}


def component_ms(runner: EnvRunner, horizon: int, steps: int, rng: np.random.Generator) -> dict[str, float]:
    """Milliseconds per control step inside each of COMPONENTS (timers wrapped around the instance's methods), and
    the whole step."""
    env, spent = runner.env, defaultdict(float)
    owners = {"agent": env.agent, "scene": env.scene, "env": env}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    for name, (owner, method) in COMPONENTS.items():
        setattr(owners[owner], method, timed(name, getattr(owners[owner], method)))
    try:
        total = steps / runner_rate(runner, horizon, steps, rng)
    finally:
        for owner, method in COMPONENTS.values():
            delattr(owners[owner], method)
    return {name: 1e3 * s / steps for name, s in spent.items()} | {"step": 1e3 * total / steps}


def per_core_table(args, rng: np.random.Generator) -> list[str]:
    rows = [f"| task | H | old (env-steps/s) | new (env-steps/s) | new / old |", "|---|---|---|---|---|"]
    component_rows = ["| task | robot | step | " + " | ".join(COMPONENTS) + " | other |",
                      "|---|---|" + "---|" * (len(COMPONENTS) + 2)]
    for task in args.tasks:
        cfg = load_task_config(task)
        runners = {k: EnvRunner(cfg, args.domain, "train", "state", seed=0, robot_uid=uid) for k, uid in ROBOTS.items()}
        for runner in runners.values():
            runner.reset()
            runner_rate(runner, args.chunk[0], 20, rng)  # warm-up
        for horizon in args.chunk:
            rates = defaultdict(list)
            for _ in range(args.repeats):
                for name, runner in runners.items():
                    rates[name].append(runner_rate(runner, horizon, args.steps, rng))
            old, new = statistics.median(rates["old"]), statistics.median(rates["new"])
            rows.append(f"| {task} | {horizon} | {old:.0f} | {new:.0f} | {new / old:.2f}x |")
            print(rows[-1], flush=True)
        if args.components:
            for name, runner in runners.items():
                ms = component_ms(runner, args.chunk[0], args.steps, rng)
                other = ms["step"] - sum(ms[c] for c in COMPONENTS)
                component_rows.append(f"| {task} | {name} | {ms['step']:.2f} | "
                                      + " | ".join(f"{ms[c]:.2f}" for c in COMPONENTS) + f" | {other:.2f} |")
                print(component_rows[-1], flush=True)
        for runner in runners.values():
            runner.close()
    if args.components:
        rows += ["", "milliseconds per control step:", *component_rows]
    return rows


def worker_tables(args, cfg, rng: np.random.Generator) -> list[str]:
    rows = ["| robot | workers | H | per-step render (env-steps/s) | chunk-aware (env-steps/s) | speed-up |",
            "|---|---|---|---|---|---|"]
    state_rows = ["| robot | workers | state only, no rendering (env-steps/s) |", "|---|---|---|"]
    for workers in args.workers:
        for name, uid in ROBOTS.items():
            start = time.perf_counter()
            venv = make_env(cfg, args.domain, obs_mode="rgb", num_envs=workers, seed=0, robot_uid=uid)
            venv.reset()
            print(f"# {name}: {workers} workers started in {time.perf_counter() - start:.0f} s", flush=True)
            for horizon in args.chunk:
                per_step = measure(venv, horizon, True, args.duration, rng)
                chunked = measure(venv, horizon, False, args.duration, rng)
                rows.append(f"| {name} | {workers} | {horizon} | {per_step:.0f} | {chunked:.0f} | "
                            f"{chunked / per_step:.2f}x |")
                print(rows[-1], flush=True)
            venv.close()
            if args.state:
                venv = make_env(cfg, args.domain, obs_mode="state", num_envs=workers, seed=0, robot_uid=uid)
                venv.reset()
                rate = measure(venv, max(args.chunk), False, args.duration, rng)
                state_rows.append(f"| {name} | {workers} | {rate:.0f} |")
                print(state_rows[-1], flush=True)
                venv.close()
    return [*rows, *(["", *state_rows] if args.state else [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="tasks of the per-core table")
    parser.add_argument("--chunk", type=int, nargs="+", default=[4], help="chunk lengths H")
    parser.add_argument("--domain", default="sim")
    parser.add_argument("--steps", type=int, default=400, help="control steps per per-core measurement")
    parser.add_argument("--repeats", type=int, default=3, help="old/new alternations per per-core measurement")
    parser.add_argument("--components", action="store_true", help="also time the parts of a control step")
    parser.add_argument("--workers", type=int, nargs="*", default=[],
                        help="also measure N worker processes with rendering (e.g. 1 8 16), first task only")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per worker measurement")
    parser.add_argument("--state", action="store_true", help="with --workers: also state-only (no rendering) stepping")
    args = parser.parse_args()
    if min(args.chunk) < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--chunk, --steps and --repeats must be >= 1")

    torch.set_num_threads(1)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"# twin env throughput: domain={args.domain} cpus={os.cpu_count()} gpu={gpu} "
          f"cpu={platform.processor() or platform.machine()} python={platform.python_version()} "
          f"torch={torch.__version__}", flush=True)
    rng = np.random.default_rng(0)
    out = ["", "per core (one env in this process, state obs):", *per_core_table(args, rng)]
    if args.workers:
        cfg = load_task_config(args.tasks[0])
        out += ["", f"{args.tasks[0]}, worker processes, image {cfg.camera.height}x{cfg.camera.width}:",
                *worker_tables(args, cfg, rng)]
    print("\n".join(out))


if __name__ == "__main__":
    main()
