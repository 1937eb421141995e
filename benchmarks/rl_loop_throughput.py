"""Stage II's whole loop (rollout + PPO update) against the raw vector-env rate, in one run at the same settings.

    python benchmarks/rl_loop_throughput.py                     # GPU machine: 16 envs, Stage II's recipe, overlap on+off
    python benchmarks/rl_loop_throughput.py --envs 2 --iterations 3 --device cpu --obs state --num-steps 4   # CPU

A randomly initialised small VLA (configs/policy/vla_flow.yaml, stats of a unit box) on `--device`; the twin's
worker pool (physx_cpu, one process per env). First the raw env rate: all envs step random chunks together for
`iterations x num_steps` chunks (env steps / time inside `step_chunk`), measured before and again after the loops:
the ratio is taken against the higher of the two (one short raw window alone has come out 30 % low on the GPU
machine). Then, per `--overlap` value, Stage II's
loop (RolloutPipeline + PPOTrainer with the β-anchor on synthetic real batches) for `--iterations` iterations after
one warm-up iteration: loop = env steps / wall time, drained only at the end; and the PPO update's time per iteration
against the rollout's (collect) time — with overlap the update hides behind the next rollout while it is shorter. `--obs state` skips rendering and feeds
the policy black images. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec
from cotrain.data.stats import box_stats
from cotrain.envs import load_task_config, make_env
from cotrain.policies import make_policy, policy_config_from_dict
from cotrain.rl import PPOTrainer, RealBatchStream, RLConfig
from cotrain.rl.pipeline import RolloutPipeline

SPEC = FeatureSpec()


class BlankImages:
    """A state-only env with a black camera image added to every observation (the policy still encodes one)."""

    def __init__(self, env):
        self.env, self.num_envs = env, env.num_envs

    def _add(self, obs):
        n = obs[STATE_KEY].shape[0]
        return obs | {IMAGE_KEY: torch.zeros(n, SPEC.image_height, SPEC.image_width, 3, dtype=torch.uint8)}

    def _fix(self, result):
        obs, reward, terminated, truncated, info = result
        return self._add(obs), reward, terminated, truncated, info | {"final_obs": self._add(info["final_obs"])}

    def reset(self, seeds=None):
        return self._add(self.env.reset(seeds))

    def step_chunk(self, actions):
        return self._fix(self.env.step_chunk(actions))

    def step_chunk_async(self, actions, envs):
        self.env.step_chunk_async(actions, envs)

    def step_chunk_wait(self, envs):
        return self._fix(self.env.step_chunk_wait(envs))

    def close(self):
        self.env.close()


def small_vla(device: str):
    cfg = yaml.safe_load((Path(__file__).parents[1] / "configs/policy/vla_flow.yaml").read_text())
    torch.manual_seed(0)
    return make_policy(policy_config_from_dict(cfg), SPEC, box_stats(SPEC.state_dim, SPEC.action_dim, 0.05)).to(device)


def synthetic_real(n: int, chunk: int, instruction: str) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{IMAGE_KEY: torch.randint(0, 256, (SPEC.image_height, SPEC.image_width, 3), generator=g, dtype=torch.uint8),
             STATE_KEY: torch.randn(8, generator=g), ACTION_KEY: (torch.rand(chunk, 7, generator=g) - 0.5) * 0.1,
             "action_is_pad": torch.zeros(chunk, dtype=torch.bool), TASK_KEY: instruction} for _ in range(n)]


def raw_env_rate(env, chunks: int, horizon: int) -> float:
    """Env steps / seconds inside step_chunk, all envs together, random small actions (after one warm-up chunk)."""
    rng = np.random.default_rng(0)
    seconds = steps = 0.0
    for i in range(chunks + 1):
        actions = rng.normal(0.0, 0.02, (env.num_envs, horizon, 7)).astype(np.float32)
        actions[..., 6] = 1.0
        start = time.perf_counter()
        env.step_chunk(actions)
        if i > 0:
            seconds, steps = seconds + time.perf_counter() - start, steps + env.num_envs * horizon
    return steps / seconds


def loop_rate(env, policy, cfg: RLConfig, iterations: int, real) -> dict[str, float]:
    """Stage II's loop for 1 warm-up + `iterations` iterations; rates over the timed ones."""
    pipeline = RolloutPipeline(env, policy, cfg)
    trainer = PPOTrainer(policy, cfg, RealBatchStream(real, cfg.real_batch_size, seed=0) if cfg.beta > 0 else None)
    total = {"env_steps": 0.0, "env_s": 0.0, "collect_s": 0.0, "policy_s": 0.0, "update_s": 0.0}
    start = None
    for k in range(iterations + 1):
        buffer, stats = pipeline.rollout(k, prefetch_next=k < iterations)
        t0 = time.perf_counter()
        trainer.update(buffer)
        if k == 0:  # warm-up (CUDA init, allocator); rollout 1 is already running in overlap mode
            start = time.perf_counter()
            continue
        total["update_s"] += time.perf_counter() - t0
        for key in ("env_steps", "env_s", "collect_s", "policy_s"):
            total[key] += getattr(stats, key)
    wall = time.perf_counter() - start
    pipeline.close()
    return {"loop": total["env_steps"] / wall, "rollout": total["env_steps"] / total["collect_s"],
            "env_in_loop": total["env_steps"] / total["env_s"], "policy_share": total["policy_s"] / total["collect_s"],
            "update_s": total["update_s"] / iterations, "rollout_s": total["collect_s"] / iterations,
            "wall_s": wall / iterations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=6, help="timed iterations (after one warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--overlap", nargs="+", choices=["on", "off"], default=["on", "off"], help="rl.overlap_update")
    parser.add_argument("--groups", type=int, default=RLConfig.rollout_groups, help="rl.rollout_groups")
    parser.add_argument("--task", default="pick_place")
    parser.add_argument("--obs", choices=["rgb", "state"], default="rgb")
    parser.add_argument("--num-steps", type=int, default=60,
                        help="rl.num_steps (chunks per rollout; 60: configs/stage2.yaml's recipe)")
    parser.add_argument("--beta", type=float, default=0.2, help="rl.beta (anchor on synthetic real batches)")
    args = parser.parse_args()

    task = load_task_config(args.task)
    policy = small_vla(args.device)
    n_params = sum(p.numel() for p in policy.parameters())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"# RL loop throughput: task={args.task} obs={args.obs} envs={args.envs} H={policy.chunk_size} "
          f"T={args.num_steps} policy=small_vla ({n_params / 1e6:.2f}M params) on {args.device}; cpus={os.cpu_count()} "
          f"gpu={gpu} torch={torch.__version__}", flush=True)
    env = make_env(task, "sim", obs_mode=args.obs, num_envs=args.envs, seed=0)
    env = BlankImages(env) if args.obs == "state" else env
    env.reset(seeds=list(range(args.envs)))
    raw_before = raw_env_rate(env, args.iterations * args.num_steps, policy.chunk_size)
    print(f"# raw env (before the loops): {raw_before:.0f} env-steps/s", flush=True)
    real = synthetic_real(64, policy.chunk_size, "put the red cube in the tray")
    loops = {}
    for overlap in args.overlap:
        cfg = RLConfig(num_steps=args.num_steps, beta=args.beta, overlap_update=overlap == "on",
                       rollout_groups=args.groups)
        loops[overlap] = loop_rate(env, policy, cfg, args.iterations, real)
        print(f"# overlap {overlap}: loop {loops[overlap]['loop']:.0f} env-steps/s", flush=True)
    raw_after = raw_env_rate(env, args.iterations * args.num_steps, policy.chunk_size)
    env.close()
    raw = max(raw_before, raw_after)
    rows = [f"raw env: {raw_before:.0f} before, {raw_after:.0f} after the loops; ratios against {raw:.0f}", "",
            "| overlap | groups | raw env | env in loop | rollout | loop | loop / raw | policy share of rollout "
            "| update s/it | rollout s/it | update / rollout | loop s/it |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for overlap, r in loops.items():
        rows.append(f"| {overlap} | {args.groups} | {raw:.0f} | {r['env_in_loop']:.0f} | {r['rollout']:.0f} | "
                    f"{r['loop']:.0f} | {r['loop'] / raw:.2f}x | {100 * r['policy_share']:.0f}% | "
                    f"{r['update_s']:.2f} | {r['rollout_s']:.2f} | {100 * r['update_s'] / r['rollout_s']:.0f}% | "
                    f"{r['wall_s']:.2f} |")
    print("\n".join(["", *rows]))


if __name__ == "__main__":
    main()
