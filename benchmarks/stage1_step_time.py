"""Where a Stage I step's time goes: the data path and each phase of `cotrain.stage1.sft_step`.

    python benchmarks/stage1_step_time.py --batch 128 --steps 50 --threads 2

Synthetic data shaped like pick_place demos (100 sim + 20 real-proxy episodes of 35 frames, random pixels): the
model and the update are the real ones; only the numbers in the images are not. Rows:
- data: `Mixture.batch` (CPU: draw, collate) and the host-to-device copy;
- the step (`sft_step`: loss, backward, clip, AdamW, EMA) on one device batch, split into phases, each ended by a
  device synchronisation (so they add up to a bit more than the step, which overlaps host and device work);
- Stage I's loop (next batch, to device, step) with the batches drawn inline (what `cotrain.stage1.train` does)
  vs by DataLoader worker processes, measured in the same run.
Prints a markdown table.
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
from cotrain.data.spec import FeatureSpec
from cotrain.ema import EMA
from cotrain.policies import make_policy, policy_config_from_dict
from cotrain.runtime import pick_device, to_device
from cotrain.stage1 import sft_step

ROOT = Path(__file__).resolve().parent.parent


def synthetic_store(n_episodes: int, frames: int, domain: str, rng: np.random.Generator):
    episodes = [[{"image": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
                  "state": rng.standard_normal(8).astype(np.float32),
                  "action": rng.uniform(-1, 1, 7).astype(np.float32),
                  "task": "put the red cube in the tray"} for _ in range(frames)] for _ in range(n_episodes)]
    return store_from_episodes(episodes, [Provenance(domain, "expert", i) for i in range(n_episodes)])


class MixtureBatches(torch.utils.data.Dataset):
    """Batch k of a mixture as item k (a DataLoader over it with batch_size=None yields the same sequence)."""

    def __init__(self, mixture: Mixture, steps: int) -> None:
        self.mixture, self.steps = mixture, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, k: int) -> dict:
        return self.mixture.batch(k)


class Timer:
    """Mean milliseconds per named phase, each phase ended by a device synchronisation."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.total, self.count = device, {}, {}

    def __call__(self, name: str, fn):
        start = time.perf_counter()
        out = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - start
        self.count[name] = self.count.get(name, 0) + 1
        return out

    def ms(self, name: str) -> float:
        return 1000 * self.total[name] / self.count[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="vla_flow", help="configs/policy/<name>.yaml")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (Stage I sweeps run 2 per variant)")
    parser.add_argument("--device", default="auto")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    rng = np.random.default_rng(0)
    mixture = Mixture([ChunkDataset(synthetic_store(20, 35, "real_proxy", rng), 4)],
                      [ChunkDataset(synthetic_store(100, 35, "sim", rng), 4)], alpha=0.2, batch_size=a.batch)
    cfg = policy_config_from_dict(yaml.safe_load((ROOT / "configs/policy" / f"{a.policy}.yaml").read_text()))
    torch.manual_seed(0)
    policy = make_policy(cfg, FeatureSpec(), mixture.norm_stats().stats).to(device).train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, fused=device.type == "cuda")  # as Stage I
    ema = EMA(policy, 0.999)
    timer = Timer(device)

    batch = to_device(mixture.batch(0), device)
    for k in range(3):  # warm-up: allocator, kernel selection
        sft_step(policy, optimizer, ema, batch, 1.0, k)
    for k in range(a.steps):
        cpu_batch = timer("data: Mixture.batch (CPU)", lambda: mixture.batch(k))
        timer("data: to device", lambda: to_device(cpu_batch, device))
    for k in range(a.steps):
        loss = timer("forward: sft_loss", lambda: policy.sft_loss(batch))
        timer("isfinite check (host sync)", lambda: bool(torch.isfinite(loss)))
        optimizer.zero_grad(set_to_none=True)
        timer("backward", loss.backward)
        timer("clip_grad_norm_", lambda: torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0))
        timer("AdamW step", optimizer.step)
        timer("EMA update", lambda: ema.update(policy))

    def loop(batches) -> float:
        """Steps/s of Stage I's loop body: next batch, to device, sft_step."""
        start = time.perf_counter()
        for k in range(a.steps):
            sft_step(policy, optimizer, ema, to_device(next(batches), device), 1.0, k)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return a.steps / (time.perf_counter() - start)

    step_only = a.steps / sum(timer.total[p] for p in timer.total if not p.startswith("data"))
    rates = {"inline": loop(mixture.iterate(0))}
    for workers in (1, 2):
        loader = torch.utils.data.DataLoader(MixtureBatches(mixture, a.steps), batch_size=None, num_workers=workers,
                                             prefetch_factor=2, pin_memory=device.type == "cuda")
        next(iter(loader))  # worker start-up outside the timing
        rates[f"{workers} worker process{'es' if workers > 1 else ''}"] = loop(iter(loader))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\nStage I step, {a.policy}, batch {a.batch}, {device} ({name}), torch {torch.__version__}, "
          f"{a.threads} CPU threads, {a.steps} steps\n")
    print("| phase | ms |")
    print("|---|---|")
    for phase in timer.total:
        print(f"| {phase} | {timer.ms(phase):.2f} |")
    print("\n| Stage I loop: where the batches come from | steps/s | vs inline |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / rates['inline']:.2f}× |")
    print(f"| (the step phases above, summed) | {step_only:.1f} | |")


if __name__ == "__main__":
    main()
