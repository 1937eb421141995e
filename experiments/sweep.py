"""Run several variants of an experiment script side by side on one machine (one GPU shared by all), then print
one table of their results. Demos are generated once (`--demos-only` into a shared cache) before the variants start.

    python experiments/sweep.py --script experiments/stage1_pick_place.py --common "--steps 8000 --workers 4" \\
        --variant base="--ema 0" --variant kp32="--keypoints 32" --out $OUT/sweep

Each variant writes `<out>/<name>/results.json` and `<out>/<name>.log`; the table reads `eval` and `openloop_mse`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--script", default="experiments/stage1_pick_place.py")
    p.add_argument("--common", default="", help="arguments every variant gets")
    p.add_argument("--variant", action="append", default=[], help="name=\"args\" (repeatable)")
    p.add_argument("--demo-workers", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per variant")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = dict(v.split("=", 1) for v in a.variant)
    if not variants:
        sys.exit("sweep: give at least one --variant name=\"args\"")
    cache = out / "demos_cache"
    common = shlex.split(a.common) + ["--demos-cache", str(cache), "--threads", str(a.threads)]
    t = time.time()
    for args in variants.values():  # one generation per distinct demo setting; the rest are cache hits
        subprocess.run([sys.executable, a.script, *common, *shlex.split(args), "--demos-only",
                        "--workers", str(a.demo_workers), "--out", str(out / "demos")], check=True)
    print(f"[sweep] demos ready in {time.time() - t:.0f}s", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    procs = {}
    for name, args in variants.items():
        log = open(out / f"{name}.log", "w")
        cmd = [sys.executable, a.script, *common, *shlex.split(args), "--out", str(out / name)]
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    for name, (proc, log) in procs.items():
        proc.wait()
        log.close()
        print(f"[sweep] {name}: exit {proc.returncode} after {time.time() - t:.0f}s", flush=True)
    rows = []
    for name in variants:
        f = out / name / "results.json"
        if not f.exists():
            rows.append(f"| {name} | failed: see {name}.log | | | |")
            continue
        r = json.loads(f.read_text())
        ev = {e["domain"]: e for e in r.get("eval", [])}
        mse = r.get("openloop_mse", {})
        cell = lambda d: (f"{ev[d]['success_rate']:.0%} ({ev[d]['ci95'][0]:.0%}–{ev[d]['ci95'][1]:.0%}), "  # noqa: E731
                          f"grasp {ev[d].get('grasp_rate', float('nan')):.0%}") if d in ev else "-"
        heldout, ratio = "-", "-"  # without --heldout demos there is no held-out error
        if "sim_heldout" in mse:
            heldout = f"{mse['sim_heldout']['all']:.4f}"
            ratio = f"{mse['sim_heldout']['all'] / mse['sim_train']['all']:.1f}×"
        rows.append(f"| {name} | {cell('sim')} | {cell('real_proxy')} | {heldout} | {ratio} | {r['stage1_seconds']:.0f} s |")
    table = "\n".join(["| variant | sim success | real-proxy success | held-out open-loop MSE | held-out/train | train time |",
                       "|---|---|---|---|---|---|", *rows])
    print(table)
    (out / "table.md").write_text(table + "\n")
    json.dump({"common": a.common, "variants": variants}, open(out / "sweep.json", "w"), indent=1)


if __name__ == "__main__":
    main()
