"""π0.5 (LeRobot, through the adapter) on one device: Stage I step and PPO update at several batch sizes (time, peak
memory, counted TFLOP/s, MFU) and `sample` latency.

    python benchmarks/pi05_step.py                                   # full size on CUDA (configs/policy/pi05.yaml)
    python benchmarks/pi05_step.py --gradient-checkpointing          # the memory options, one flag each
    python benchmarks/pi05_step.py --micro-batches 2 --freeze-vision-tower
    python benchmarks/pi05_step.py --tiny --device cpu --repeats 2   # the tiny test build on the CPU (a smoke run)

Random weights and the "bytes" tokenizer unless --pretrained-path / --tokenizer-dir name local copies; synthetic
inputs (random pixels, states and actions, one task string). Rows:
- Stage I step: `cotrain.stage1.sft_step` (SFT loss, backward, clip, AdamW) on a batch of B demos.
- PPO update: over B rollout rows (chunks sampled by the policy itself), `evaluate` + the clipped surrogate + the
  value loss + β·SFT loss on a real batch of --anchor-batch rows per micro-batch (what `PPOTrainer` backpropagates),
  then clip and AdamW; RLConfig's default coefficients.
- sample: `sample(explore=True)` latency at each batch.
FLOPs are counted (torch.utils.flop_counter) over one step as it runs: forward and backward, and with gradient
checkpointing the recomputed forward too (so MFU is then hardware-FLOPs utilisation). MFU = counted TFLOP/s over
the device's dense bf16 peak (--peak-tflops, else a table of known cards). Each row: --warmup untimed steps, then
--repeats timed ones ended by a device synchronisation; peak memory is the CUDA allocator's peak over the timed
steps. A batch that runs out of memory is reported as such and the next one is tried. Writes --out as JSON too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec
from cotrain.data.stats import batch_stats
from cotrain.policies import make_policy, policy_config_from_dict
from cotrain.rl.config import RLConfig
from cotrain.rl.ppo_loss import policy_loss, value_loss
from cotrain.runtime import pick_device, to_device
from cotrain.stage1 import sft_step

ROOT = Path(__file__).resolve().parent.parent
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}
"""Dense bf16 tensor-core peaks (vendor data sheets), matched as substrings of the device name in this order."""
TINY = {"size": "tiny", "image_size": 32, "tokenizer": "bytes", "max_text_tokens": 160}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny test build (CPU-sized), not the full π0.5")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64], help="Stage I / PPO batch sizes")
    ap.add_argument("--sample-batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--micro-batches", type=int, default=1, help="gradient accumulation parts per step")
    ap.add_argument("--anchor-batch", type=int, default=RLConfig().real_batch_size, help="real rows per PPO micro-batch; 0: no anchor")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--freeze-vision-tower", action="store_true")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default=None, help="default: the config's")
    ap.add_argument("--pretrained-path", default=None, help="a local LeRobot π0.5 directory (model.safetensors)")
    ap.add_argument("--tokenizer-dir", default=None, help="a local PaliGemma tokenizer directory (else 'bytes')")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak, for MFU")
    ap.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    return ap.parse_args()


def policy_config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = yaml.safe_load((ROOT / "configs/policy/pi05.yaml").read_text())
    cfg |= TINY if args.tiny else {"tokenizer": "bytes" if args.tokenizer_dir is None else "paligemma"}
    cfg |= {"gradient_checkpointing": args.gradient_checkpointing, "freeze_vision_tower": args.freeze_vision_tower,
            "pretrained_path": args.pretrained_path, "tokenizer_dir": args.tokenizer_dir}
    return cfg | ({"dtype": args.dtype} if args.dtype else {})


def synthetic_batch(n: int, spec: FeatureSpec, chunk: int, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {IMAGE_KEY: torch.randint(0, 256, (n, spec.image_height, spec.image_width, 3), generator=g, dtype=torch.uint8),
            STATE_KEY: torch.randn(n, spec.state_dim, generator=g) * 0.1,
            TASK_KEY: ["put the red cube in the tray"] * n,
            ACTION_KEY: torch.rand(n, chunk, spec.action_dim, generator=g) * 2 - 1,
            "action_is_pad": torch.zeros(n, chunk, dtype=torch.bool), "is_real": torch.ones(n, dtype=torch.bool)}


def build(args: argparse.Namespace, spec: FeatureSpec, device: torch.device) -> torch.nn.Module:
    cfg = policy_config_from_dict(policy_config(args), where="benchmarks/pi05_step.py")
    stats = batch_stats(synthetic_batch(64, spec, cfg.chunk_size, seed=1))
    start = time.perf_counter()
    try:
        with torch.device(device):  # random initialisation on the device itself: minutes faster at full size
            policy = make_policy(cfg, spec, stats).to(device)
    except (RuntimeError, NotImplementedError) as err:
        print(f"building on {device} failed ({type(err).__name__}: {err}); building on the CPU, then moving")
        policy = make_policy(cfg, spec, stats).to(device)
    n_all = sum(p.numel() for p in policy.parameters())
    n_trained = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    print(f"built in {time.perf_counter() - start:.1f} s: {n_all:,} parameters, {n_trained:,} trained")
    return policy.train()


def rows(batch: dict[str, Any], part: slice) -> dict[str, Any]:
    return {k: v[part] for k, v in batch.items()}


def parts(n: int, micro_batches: int) -> list[slice]:
    return [slice(int(r[0]), int(r[-1]) + 1) for r in torch.arange(n).tensor_split(micro_batches)]


def ppo_update(policy, optimizer, rollout: dict[str, Any], real: dict[str, Any] | None, micro_batches: int) -> None:
    """One PPO minibatch update as `PPOTrainer` makes it: per micro-batch one backward of
    pg_loss + vf_coef·v_loss − ent_coef·entropy + β·sft_loss, then clip and AdamW."""
    cfg, n = RLConfig(), len(rollout["logprob"])
    optimizer.zero_grad(set_to_none=True)
    for part in parts(n, micro_batches):
        mb = rows(rollout, part)
        logprob, entropy, value = policy.evaluate(mb["obs"], mb["aux"])
        pg_loss, _ = policy_loss(logprob, mb["logprob"], mb["advantages"], cfg.clip_coef)
        v_loss = value_loss(value, mb["value"], mb["returns"], cfg.vf_clip_coef, cfg.huber_delta)
        sft = policy.sft_loss(real) if real is not None else torch.zeros((), device=logprob.device)
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy.mean() + cfg.beta * sft
        (loss * ((part.stop - part.start) / n)).backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
    optimizer.step()


def make_rollout(policy, batch: dict[str, Any]) -> dict[str, Any]:
    obs = {k: batch[k] for k in (IMAGE_KEY, STATE_KEY, TASK_KEY)}
    _, logprob, value, aux = policy.sample(obs, explore=True)
    g = torch.Generator().manual_seed(2)
    advantages = torch.randn(len(logprob), generator=g).to(logprob.device)
    return {"obs": _Rows(obs), "aux": _Rows(aux), "logprob": logprob, "value": value, "advantages": advantages,
            "returns": value + advantages}


class _Rows(dict):
    """A dict whose `[slice]` slices every value by rows (observations and the chain's aux in `rows`)."""

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        if isinstance(key, slice):
            return _Rows({k: v[key] for k, v in self.items()})
        return super().__getitem__(key)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, device: torch.device, warmup: int, repeats: int, peak_tflops: float | None) -> dict[str, Any]:
    """Counted FLOPs of one step, then seconds per step and the peak memory of the timed steps."""
    try:
        with FlopCounterMode(display=False) as counter:
            step()
        for _ in range(max(warmup - 1, 0)):
            step()
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        sync(device)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"error": "out of memory"}
    seconds = (time.perf_counter() - start) / repeats
    tflops = counter.get_total_flops() / seconds / 1e12
    return {"s": seconds, "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "tflop": counter.get_total_flops() / 1e12, "tflops": tflops,
            "mfu": tflops / peak_tflops if peak_tflops else None}


def fmt(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['error']} | | | |"
    mem = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "n/a"
    mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a"
    return f"{r['s']:.3f} | {mem} | {r['tflops']:.3g} | {mfu} |"


def main() -> None:
    args = parse_args()
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    spec = FeatureSpec(image_height=32, image_width=32) if args.tiny else FeatureSpec()
    policy = build(args, spec, device)
    chunk = policy.chunk_size
    trained = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-5, weight_decay=1e-4, fused=device.type == "cuda")
    print(f"device {name}, peak {peak} TFLOP/s, micro_batches {args.micro_batches}, gradient_checkpointing "
          f"{args.gradient_checkpointing}, freeze_vision_tower {args.freeze_vision_tower}\n")
    results: dict[str, Any] = {"device": name, "peak_tflops": peak, "args": {k: str(v) for k, v in vars(args).items()}}
    print("| row | batch | s / step | peak GiB | TFLOP/s | MFU |\n|---|---|---|---|---|---|")
    for b in args.batches:
        batch = to_device(synthetic_batch(b, spec, chunk), device)
        r = measure(lambda: sft_step(policy, optimizer, None, batch, 1.0, 0, args.micro_batches),  # noqa: B023
                    device, args.warmup, args.repeats, peak)
        results[f"stage1_b{b}"] = r
        print(f"| Stage I step | {b} | {fmt(r)}", flush=True)
    for b in args.batches:
        with torch.no_grad():
            rollout = make_rollout(policy, to_device(synthetic_batch(b, spec, chunk, seed=3), device))
        real = to_device(synthetic_batch(args.anchor_batch, spec, chunk, seed=4), device) if args.anchor_batch else None
        r = measure(lambda: ppo_update(policy, optimizer, rollout, real, args.micro_batches),  # noqa: B023
                    device, args.warmup, args.repeats, peak)
        results[f"ppo_b{b}"] = r
        print(f"| PPO update | {b} | {fmt(r)}", flush=True)
    for b in args.sample_batches:
        obs = {k: v for k, v in to_device(synthetic_batch(b, spec, chunk, seed=5), device).items()
               if k in (IMAGE_KEY, STATE_KEY, TASK_KEY)}
        r = measure(lambda: policy.sample(obs, explore=True), device, args.warmup, args.repeats, peak)  # noqa: B023
        results[f"sample_b{b}"] = r
        print(f"| sample (explore) | {b} | {fmt(r)}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
