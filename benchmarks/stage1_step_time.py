"""Stage I steps/s: the plain path vs the fast path (`cotrain.graphed_step`), and K runs in one process.

    python benchmarks/stage1_step_time.py                 # CUDA when present, else CPU (then use small --batch)

Synthetic data shaped like pick_place demos (100 sim + 20 real-proxy episodes of 35 frames, random uint8 pixels,
α = 0.2): the model and the update are the real ones; only the numbers in the images are not. Rows:
- plain: `Mixture.batch` on the host, copy to the device, `cotrain.stage1.sft_step` (what `fast: false` runs);
- fast, K = 1: device batches and the whole step as one CUDA-graph replay (`fast: true`);
- fast, K runs in one process (`seeds: [...]`): steps/s of the bundle (each step advances all K runs), and that
  rate over the single run's (target ≥ 0.8: each run as fast as alone).
Each row: warm-up steps first (graph capture included), then a fixed number of timed steps ended by a device
synchronisation. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cotrain.data import ChunkDataset, Mixture, Provenance, store_from_episodes
from cotrain.data.device_batches import DeviceBatches
from cotrain.data.spec import FeatureSpec
from cotrain.ema import EMA
from cotrain.graphed_step import GraphedStep, Run, capturable_adamw
from cotrain.policies import make_policy, policy_config_from_dict
from cotrain.policies.tokenizer import encode_tasks
from cotrain.runtime import pick_device, to_device
from cotrain.stage1 import sft_step

ROOT = Path(__file__).resolve().parent.parent
LR = 1e-4


def synthetic_store(n_episodes: int, frames: int, domain: str, rng: np.random.Generator):
    episodes = [[{"image": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
                  "state": rng.standard_normal(8).astype(np.float32),
                  "action": rng.uniform(-1, 1, 7).astype(np.float32),
                  "task": "put the red cube in the tray"} for _ in range(frames)] for _ in range(n_episodes)]
    return store_from_episodes(episodes, [Provenance(domain, "expert", i) for i in range(n_episodes)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, warmup: int, steps: int, device: torch.device) -> float:
    """Steps/s of `step()` over `steps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps / (time.perf_counter() - start)


def plain_rate(cfg, mixture: Mixture, device: torch.device, a) -> float:
    torch.manual_seed(0)
    policy = make_policy(cfg, FeatureSpec(), mixture.norm_stats().stats).to(device).train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=LR, fused=device.type == "cuda")  # as Stage I
    ema, k = EMA(policy, 0.999), iter(range(10**9))

    def step() -> None:
        i = next(k)
        sft_step(policy, optimizer, ema, to_device(mixture.batch(i), device), 1.0, i)

    return timed(step, 3, a.plain_steps, device)


def fast_rate(cfg, mixture: Mixture, device: torch.device, a, k_runs: int) -> float:
    total = a.warmup + a.fast_steps
    data = DeviceBatches(mixture, 0, total, device, lambda tasks: encode_tasks(tasks, cfg.max_text_tokens)[0])
    runs = []
    for seed in range(k_runs):
        torch.manual_seed(seed)
        policy = make_policy(cfg, FeatureSpec(), mixture.norm_stats().stats).to(device).train()
        optimizer = capturable_adamw([{"params": list(policy.parameters()), "lr_scale": 1.0}], 0.0, device)
        table = torch.full((total, 1), LR, device=device)
        runs.append(Run(policy, optimizer, EMA(policy, 0.999), torch.Generator(device).manual_seed(seed), table))
    engine = GraphedStep(runs, data, grad_clip=1.0, image_shift=cfg.image_shift, has_pad=False, start=0)
    return timed(engine.step, a.warmup, a.fast_steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="vla_flow", help="configs/policy/<name>.yaml")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--plain-steps", type=int, default=50)
    parser.add_argument("--fast-steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10, help="untimed fast steps (3 eager, then capture, replays)")
    parser.add_argument("--runs", type=int, default=4, help="K runs in one process")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    rng = np.random.default_rng(0)
    mixture = Mixture([ChunkDataset(synthetic_store(20, 35, "real_proxy", rng), 4)],
                      [ChunkDataset(synthetic_store(100, 35, "sim", rng), 4)], alpha=0.2, batch_size=a.batch)
    cfg = policy_config_from_dict(yaml.safe_load((ROOT / "configs/policy" / f"{a.policy}.yaml").read_text()))
    plain = plain_rate(cfg, mixture, device, a)
    fast = fast_rate(cfg, mixture, device, a, 1)
    bundle = fast_rate(cfg, mixture, device, a, a.runs)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\nStage I, {a.policy}, batch {a.batch}, {device} ({name}), torch {torch.__version__}, "
          f"timed steps: plain {a.plain_steps}, fast {a.fast_steps} (after {a.warmup} warm-up)\n")
    print("| path | steps/s | vs plain | per run vs fast K=1 |")
    print("|---|---|---|---|")
    print(f"| plain (host batches, eager sft_step) | {plain:.1f} | 1.00× | |")
    print(f"| fast, K = 1 (device batches, one graph replay) | {fast:.1f} | {fast / plain:.2f}× | 1.00× |")
    print(f"| fast, K = {a.runs} runs in one process (each step: all {a.runs}) | {bundle:.1f} | "
          f"{bundle / plain:.2f}× | {bundle / fast:.2f}× |")
    print(f"\nruns trained per second of wall time: plain {plain:.1f}, fast K=1 {fast:.1f}, "
          f"fast K={a.runs} {a.runs * bundle:.1f} run-steps/s")


if __name__ == "__main__":
    main()
