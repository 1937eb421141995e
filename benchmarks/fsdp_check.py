"""FSDP2 vs DDP for Stage II's update on N ranks: the same weights after a few steps, and the memory per rank.

    torchrun --nproc-per-node 2 benchmarks/fsdp_check.py --policy vla                      # equality, small VLA
    torchrun --nproc-per-node 2 benchmarks/fsdp_check.py --policy vla --units declared     # + head.decoder unit
    torchrun --nproc-per-node 2 benchmarks/fsdp_check.py --policy pi05 --batch 2 --steps 2  # ~3.6B params, memory
    torchrun --nproc-per-node 2 benchmarks/fsdp_check.py --policy vla --device cpu         # gloo, no GPU

Every rank starts from its own random weights (both wrappers must take rank 0's), makes its own observations and
demonstrations, and records aux/log-probs/values with the policy's own `sample(explore=True)`. Then, per mode, the
same optimizer steps: 2 micro-batches (gradient sync on the last), PPO + value + β·SFT loss, clip, AdamW. A mode
that runs out of memory is reported as such (DDP keeps full parameters, gradients, buckets and Adam state per rank).
Prints per rank: peak allocated / reserved memory and time per step; rank 0: max |θ_fsdp2 − θ_ddp| and PASS/FAIL;
with --ckpt DIR the FSDP2 run is also gathered, saved with save_checkpoint, reloaded and compared bit for bit.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch
import torch.distributed as dist

from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec
from cotrain.data.stats import batch_stats
from cotrain.policies import load_policy, make_policy, save_checkpoint
from cotrain.rl.config import RLConfig
from cotrain.rl.distributed import (
    clip_grad_norm, full_state_dict, gathered, grad_sync, init_distributed, savable_policy, wrap_step,
)
from cotrain.rl.ppo_loss import policy_loss, value_loss
from cotrain.rl.trainer import make_optimizer

TASKS = ["pick up the red cube", "push the blue cube to the left"]


def build(kind: str, spec: FeatureSpec, stats: dict, seed: int):
    from cotrain.policies.configuration_lerobot import LeRobotVLAConfig
    from cotrain.policies.configuration_vla import FlowHeadConfig, SmallVLAConfig

    torch.manual_seed(seed)
    head = FlowHeadConfig(n_layers=2, rl_method="flow_sde")
    cfg = {"vla": lambda: SmallVLAConfig(chunk_size=4, d_model=256, n_heads=8, n_layers=6, mlp_ratio=4, head=head),
           "lerobot_tiny": lambda: LeRobotVLAConfig(size="tiny", image_size=32, tokenizer="bytes", max_text_tokens=160),
           "pi05": lambda: LeRobotVLAConfig(size="full", tokenizer="bytes", max_text_tokens=160)}[kind]()
    return make_policy(cfg, spec, stats, load_pretrained=False)


def declared_units(policy) -> dict[str, tuple[str, ...]]:
    """The small VLA's proposed `fsdp_units()`: trunk blocks + the head's decoder (keys/values outside forward)."""
    return {f"trunk.{i}": () for i in range(len(policy.trunk))} | {"head.decoder": ("memory_kv",)}


def synthetic(spec: FeatureSpec, n: int, chunk: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (n, spec.image_height, spec.image_width, 3), generator=g, dtype=torch.uint8)
    scale = torch.tensor([0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0])
    return {IMAGE_KEY: image, STATE_KEY: torch.randn(n, spec.state_dim, generator=g) * 0.1,
            TASK_KEY: [TASKS[i % 2] for i in range(n)], "action_is_pad": torch.zeros(n, chunk, dtype=torch.bool),
            ACTION_KEY: (torch.rand(n, chunk, spec.action_dim, generator=g) * 2 - 1) * scale}


def rows(d: dict, index: slice) -> dict:
    return {k: v[index] for k, v in d.items()}


def make_data(policy, spec: FeatureSpec, batch: int, rank: int) -> list[SimpleNamespace]:
    """Two micro-batches of this rank's PPO samples (aux from the policy's own sample) + real demonstrations."""
    obs = {k: v for k, v in synthetic(spec, 2 * batch, policy.chunk_size, 1000 + rank).items()
           if k in (IMAGE_KEY, STATE_KEY, TASK_KEY)}
    real = synthetic(spec, 2 * batch, policy.chunk_size, 2000 + rank)
    torch.manual_seed(3000 + rank)
    _, logprob, value, aux = policy.sample(obs, explore=True)
    g = torch.Generator().manual_seed(4000 + rank)
    adv, noise = torch.randn(2 * batch, generator=g), torch.randn(2 * batch, generator=g)
    micro = []
    for k in range(2):
        s = slice(k * batch, (k + 1) * batch)
        micro.append(SimpleNamespace(obs=rows(obs, s), aux={n: v[s] for n, v in aux.items()}, logprobs=logprob[s],
                                     values=value[s], advantages=adv[s].to(value.device),
                                     returns=(value + 0.1 * noise.to(value.device))[s], real=rows(real, s)))
    return micro


def train(step, policy, opt, micro, cfg: RLConfig, steps: int, device: torch.device) -> list[float]:
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for k, mb in enumerate(micro):
            torch.manual_seed(10 * s + k)
            with grad_sync(step, sync=k == len(micro) - 1):
                logprob, _, value, sft = step(mb.obs, mb.aux, mb.real, True)
                pg_loss, _ = policy_loss(logprob, mb.logprobs, mb.advantages, cfg.clip_coef)
                v_loss = value_loss(value, mb.values, mb.returns, cfg.vf_clip_coef, cfg.huber_delta)
                ((pg_loss + cfg.vf_coef * v_loss + cfg.beta * sft) / len(micro)).backward()
        clip_grad_norm(policy.parameters(), cfg.max_grad_norm)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def run_mode(mode: str, args, info, spec, stats, data_holder: dict) -> dict:
    dev = info.device
    policy = build(args.policy, spec, stats, seed=100 + info.rank)  # own init per rank
    if mode == "ddp":
        policy = policy.to(dev)  # fsdp2 moves its shards to the device itself (from CPU: no full copy on the GPU)
    if mode == "fsdp2" and args.units == "declared":
        policy.fsdp_units = lambda: declared_units(policy)
    cfg = RLConfig(lr=1e-4, value_lr=1e-3, beta=0.2, data_parallel=mode)
    step = wrap_step(policy, info, find_unused_parameters=True, data_parallel=mode)
    opt = make_optimizer(policy, cfg)
    if "micro" not in data_holder:
        with gathered(policy):  # rank-independent: the same sample calls on every rank anyway
            data_holder["micro"] = make_data(policy, spec, args.batch, info.rank)
    times = train(step, policy, opt, data_holder["micro"], cfg, args.steps, dev)
    out = {"step_s": times[1:] or times}
    if dev.type == "cuda":
        out |= {"peak_alloc_gib": torch.cuda.max_memory_allocated(dev) / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(dev) / 2**30}
    out["state"] = full_state_dict(policy)
    if mode == "fsdp2" and args.ckpt:
        t0 = time.perf_counter()
        to_save = savable_policy(policy, info.rank)  # gather + (rank 0) an unsharded CPU copy built from the config
        if info.is_main:
            save_checkpoint(args.ckpt, to_save, step=args.steps)
            out["ckpt_save_s"] = time.perf_counter() - t0
            loaded = load_policy(args.ckpt).state_dict()
            out["ckpt_roundtrip_exact"] = all(torch.equal(loaded[k], out["state"][k]) for k in out["state"])
        del to_save
    del policy, opt, step
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", choices=["vla", "lerobot_tiny", "pi05"], default="vla")
    p.add_argument("--units", choices=["default", "declared"], default="default",
                   help="FSDP2 shard units: the policy's default, or the small VLA's proposed fsdp_units()")
    p.add_argument("--modes", default="ddp,fsdp2")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=8, help="rows per micro-batch (2 micro-batches per step)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--ckpt", default=None, help="save/reload the FSDP2 weights through save_checkpoint here")
    p.add_argument("--json", default=None, help="rank 0 writes the per-rank results here")
    args = p.parse_args()

    info = init_distributed(args.device)
    spec = FeatureSpec(image_height=32, image_width=32) if args.policy == "lerobot_tiny" else FeatureSpec()
    stats = batch_stats(synthetic(spec, 64, 4, seed=0))
    data: dict = {}
    results: dict[str, dict] = {}
    for mode in args.modes.split(","):
        if info.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(info.device)
        try:
            results[mode] = run_mode(mode, args, info, spec, stats, data)
        except torch.OutOfMemoryError as e:
            results[mode] = {"oom": str(e).splitlines()[0]}
        oom = torch.tensor([float("oom" in results[mode])], device=info.device)
        dist.all_reduce(oom)  # every rank leaves an out-of-memory mode together
        if oom.item() and "oom" not in results[mode]:
            results[mode] = {"oom": "on another rank"}
    params = sum(v.numel() for v in results.get("ddp", results.get("fsdp2", {})).get("state", {}).values())
    summary = {m: {k: v for k, v in r.items() if k != "state"} for m, r in results.items()}
    gathered_summaries = [None] * info.world_size
    dist.all_gather_object(gathered_summaries, summary)
    if info.is_main:
        report = {"policy": args.policy, "units": args.units, "world_size": info.world_size, "params": params,
                  "device": torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else "cpu",
                  "per_rank": gathered_summaries}
        a, b = (results.get(m, {}).get("state") for m in ("ddp", "fsdp2"))
        if a and b:
            diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
            close = all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4) for k in a)
            report |= {"max_abs_diff_fsdp2_vs_ddp": diff, "equal": "PASS" if close else "FAIL"}
        print(json.dumps(report, indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
