"""RL-Co on pick-and-place at small scale: Stage I (SFT on sim + real-proxy demos), then Stage II (PPO in the sim twin)
with the real-data anchor (β = 0.2) and without it (β = 0), success in sim and in the real-proxy before and after.

    python experiments/rlco_pick_place.py --stage1-steps 8000 --iterations 25 --envs 16 --out $OUT/rlco

Demos are generated on the machine (worker processes) and kept in memory. The real-proxy is the simulated stand-in
for the real world: these are not real-robot numbers.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from cotrain.data import ChunkDataset  # noqa: E402
from cotrain.data.config import DataConfig  # noqa: E402
from cotrain.envs.config import load_task_config  # noqa: E402
from cotrain.metrics import WandbConfig  # noqa: E402
from cotrain.rl import RLConfig  # noqa: E402
from cotrain.stage1 import Stage1Config  # noqa: E402
from cotrain.stage1 import train as train_stage1  # noqa: E402
from cotrain.stage2 import Stage2Config  # noqa: E402
from cotrain.stage2 import train as train_stage2  # noqa: E402
from experiments.stage1_pick_place import demos  # noqa: E402


def last_rows(metrics_csv: Path) -> dict:
    """Evals at the start and end (when any), throughputs, and the rollouts' success rate averaged over the first and
    the last fifth of the iterations (one iteration's ~20 episodes are too few to show a trend)."""
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    evals = [r for r in rows if r.get("eval/sim_success")]
    perf = [r for r in rows if r.get("perf/loop_sps")]
    mean = lambda k, rs=perf: sum(float(r[k]) for r in rs) / len(rs)  # noqa: E731
    fifth = max(1, len(perf) // 5)
    out = {"loop_sps": mean("perf/loop_sps"), "env_sps": mean("perf/env_sps"), "rollout_sps": mean("perf/rollout_sps"),
           "rollout_success_first_fifth": mean("rollout/success", perf[:fifth]),
           "rollout_success_last_fifth": mean("rollout/success", perf[-fifth:])}
    if evals:
        out["eval_first"] = {k: float(evals[0][k]) for k in ("eval/sim_success", "eval/real_proxy_success")}
        out["eval_last"] = {k: float(evals[-1][k]) for k in ("eval/sim_success", "eval/real_proxy_success", "env_steps")}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sim", type=int, default=100)
    p.add_argument("--real", type=int, default=20)
    p.add_argument("--alpha", type=float, default=0.2)
    p.add_argument("--stage1-steps", type=int, default=8000)
    p.add_argument("--policy", default="vla_flow")
    p.add_argument("--iterations", type=int, default=25)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--betas", type=float, nargs="+", default=[0.2, 0.0])
    p.add_argument("--eval-episodes", type=int, default=48)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--lr", type=float, nargs="+", default=[2e-5],
                   help="policy lr(s); one run per (beta, lr) (RLinf's 5e-6 is for a 3B-parameter VLA)")
    p.add_argument("--value-lr", type=float, default=3e-4)
    p.add_argument("--vf-coef", type=float, default=RLConfig.vf_coef)
    p.add_argument("--target-kl", type=float, default=None, help="rl.target_kl (early stop of an update)")
    p.add_argument("--policy-set", nargs="*", default=[], metavar="KEY=YAML",
                   help="Stage II policy_overrides on the init checkpoint's config, e.g. value_detach=true")
    p.add_argument("--init", default=None, help="a Stage I checkpoint to start from (skips Stage I and the sim demos)")
    p.add_argument("--critic-warmup", type=int, default=0, help="rl.critic_warmup_iterations")
    p.add_argument("--overlap", choices=["on", "off"], default="on", help="rl.overlap_update")
    p.add_argument("--reward", choices=["event", "dense"], default=None,
                   help="override the task's reward for Stage II (event: grasp/success bonuses; dense: shaped)")
    p.add_argument("--eval-every", type=int, default=None, help="iterations between evals (default: only at 0 and the end)")
    p.add_argument("--num-steps", type=int, default=RLConfig.num_steps,
                   help="rl.num_steps: chunks per env per rollout (episodes per update ≈ envs·num_steps·H / episode length)")
    p.add_argument("--save-every", type=int, default=None, help="checkpoint period in iterations (default: the last)")
    p.add_argument("--resume", default=None,
                   help="a Stage II checkpoint of this script's run to continue (one β and one lr; the run's --out)")
    p.add_argument("--out", default="runs/exp_rlco")
    a = p.parse_args()
    if a.resume and len(a.betas) * len(a.lr) != 1:
        sys.exit("--resume continues one run: give one --betas value and one --lr value")
    out = Path(a.out)
    task_cfg = load_task_config("pick_place")
    policy = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs/policy" / f"{a.policy}.yaml").read_text())
    H = policy["chunk_size"]
    real = demos(task_cfg, "real_proxy", a.real, 50_000, a.workers)
    t = time.time()
    if a.init:
        ckpt = Path(a.init)
    else:
        sim = demos(task_cfg, "sim", a.sim, 0, a.workers)
        ckpt = train_stage1(Stage1Config(policy=policy, data=DataConfig(alpha=a.alpha),
                                         wandb=WandbConfig("disabled"), steps=a.stage1_steps, log_every=100,
                                         save_every=a.stage1_steps, out=str(out / "stage1"), device="auto"),
                            real=[ChunkDataset(real, H)], sim=[ChunkDataset(sim, H)])
    results = {"args": vars(a), "stage1_s": time.time() - t, "stage2": {}}
    print(f"[stage1] {a.stage1_steps} steps in {results['stage1_s']:.0f}s", flush=True)
    import dataclasses

    if a.reward is not None:
        task_cfg = dataclasses.replace(task_cfg, reward=a.reward)
    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in a.policy_set)}
    task_dict = {k: v for k, v in dataclasses.asdict(task_cfg).items() if k != "source"}
    for beta, lr in itertools.product(a.betas, a.lr):
        t = time.time()
        name = f"beta{beta}" if len(a.lr) == 1 else f"beta{beta}_lr{lr:g}"
        run = out / f"stage2_{name}"
        rl = RLConfig(beta=beta, lr=lr, value_lr=a.value_lr, vf_coef=a.vf_coef, target_kl=a.target_kl,
                      num_steps=a.num_steps, overlap_update=a.overlap == "on", critic_warmup_iterations=a.critic_warmup)
        cfg = Stage2Config(init=str(ckpt), task=task_dict, policy_overrides=overrides, rl=rl, wandb=WandbConfig("disabled"),
                           envs=a.envs, iterations=a.iterations, eval_every=a.eval_every or a.iterations,
                           eval_episodes=a.eval_episodes, save_every=a.save_every or a.iterations, out=str(run),
                           resume=a.resume, device="auto", real_in_memory=True)
        train_stage2(cfg, real_dataset=ChunkDataset(real, H))
        results["stage2"][name] = last_rows(run / "metrics.csv") | {"seconds": time.time() - t}
        print(f"[stage2 {name}] {json.dumps(results['stage2'][name])}", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))  # after each run: partial results survive


if __name__ == "__main__":
    main()
