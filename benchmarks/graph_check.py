"""Eager vs CUDA-graph `policy.sample` of the Stage II policy (configs/policy/vla_flow.yaml) on one GPU.

    python benchmarks/graph_check.py                                  # batch 8 and 16, explore on
    python benchmarks/graph_check.py --batch 8 16 32 --explore on off --side-stream
    python benchmarks/graph_check.py --config configs/policy/vla_token.yaml

Builds the policy as benchmarks/rl_loop_throughput.py's `small_vla` does (random weights, stats of a unit box),
random 128×128 images and states on the CPU (as the rollout hands them over: the host-to-device copy is part of
every call) and Stage II's instruction. Per batch size and explore value: the first graphed call (warm-up + capture,
seconds), ms per call eager and graphed (median of --calls after --warmup calls, torch.cuda.synchronize around each),
max |Δ| between the two of actions, log-prob and value for the same noise (the same generators), and the per-call
cost of the sampler's weight-storage check. `--side-stream` samples on a non-default stream, as the overlapped
rollout thread does. Needs torch and PyYAML (and numpy + safetensors, which cotrain.policies imports); no LeRobot,
no envs. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
from pathlib import Path

import torch
import yaml

from cotrain.data.spec import IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec
from cotrain.data.stats import box_stats
from cotrain.policies import make_policy, policy_config_from_dict, rng

SPEC = FeatureSpec()
INSTRUCTION = "put the red cube in the tray"


def build(config: Path, device: str):
    torch.manual_seed(0)
    cfg = policy_config_from_dict(yaml.safe_load(config.read_text()), where=str(config))
    return make_policy(cfg, SPEC, box_stats(SPEC.state_dim, SPEC.action_dim, 0.05)).to(device)


def observations(batch: int) -> dict:
    g = torch.Generator().manual_seed(batch)
    return {IMAGE_KEY: torch.randint(0, 256, (batch, SPEC.image_height, SPEC.image_width, 3), generator=g,
                                     dtype=torch.uint8),
            STATE_KEY: torch.randn(batch, SPEC.state_dim, generator=g), TASK_KEY: [INSTRUCTION] * batch}


@contextlib.contextmanager
def graphs(policy, on: bool):
    config = policy.config
    policy.config = dataclasses.replace(config, cuda_graphs=on)
    try:
        yield
    finally:
        policy.config = config


def sample(policy, obs: dict, explore: bool, seed: int):
    with rng.draw_from(torch.Generator().manual_seed(seed), torch.Generator(policy.device).manual_seed(seed)):
        return policy.sample(obs, explore=explore)


def ms_per_call(policy, obs: dict, explore: bool, warmup: int, calls: int) -> float:
    times = []
    with rng.draw_from(torch.Generator().manual_seed(0), torch.Generator(policy.device).manual_seed(0)):
        for i in range(warmup + calls):
            torch.cuda.synchronize()
            start = time.perf_counter()
            policy.sample(obs, explore=explore)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[warmup:])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    both_nan = a.isnan() & b.isnan()  # explore=False: log-prob NaN on both sides
    return float((a - b).abs().masked_fill(both_nan, 0.0).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "configs/policy/vla_flow.yaml")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--explore", choices=["on", "off"], nargs="+", default=["on"])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--side-stream", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("graph_check: needs a CUDA device")
    policy = build(args.config, "cuda")
    n_params = sum(p.numel() for p in policy.parameters())
    print(f"# {args.config.name}: {n_params / 1e6:.2f} M params on {torch.cuda.get_device_name(0)}, torch "
          f"{torch.__version__}, side stream: {args.side_stream}", flush=True)
    rows = ["| batch | explore | eager ms | graphed ms | speed-up | capture s | max abs diff actions / logprob / value "
            "| storage check us |", "|---|---|---|---|---|---|---|---|"]
    stream = torch.cuda.Stream() if args.side_stream else torch.cuda.current_stream()
    with torch.cuda.stream(stream):
        for batch in args.batch:
            for explore in (e == "on" for e in args.explore):
                obs = observations(batch)
                with graphs(policy, on=True):
                    captured_s = policy.graphs.capture_s
                    graphed = sample(policy, obs, explore, seed=1)  # captures this key's graph
                    capture_s = policy.graphs.capture_s - captured_s
                    graphed_ms = ms_per_call(policy, obs, explore, args.warmup, args.calls)
                with graphs(policy, on=False):
                    eager = sample(policy, obs, explore, seed=1)
                    eager_ms = ms_per_call(policy, obs, explore, args.warmup, args.calls)
                torch.cuda.synchronize()
                diffs = " / ".join(f"{max_diff(g.float(), e.float()):.1e}" for g, e in zip(graphed[:3], eager[:3]))
                start = time.perf_counter()
                for _ in range(1000):
                    policy.graphs._storage_key()
                check_us = 1e3 * (time.perf_counter() - start)
                rows.append(f"| {batch} | {'on' if explore else 'off'} | {eager_ms:.2f} | {graphed_ms:.2f} | "
                            f"{eager_ms / graphed_ms:.1f}x | {capture_s:.2f} | {diffs} | {check_us:.0f} |")
                print(rows[-1], flush=True)
    print(f"# graphs captured: {policy.graphs.captures}")
    print("\n".join(["", *rows]))


if __name__ == "__main__":
    main()
