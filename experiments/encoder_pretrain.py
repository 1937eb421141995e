"""Pretrain the small VLA's image encoder to locate the object and the tray in many randomised pick_place scenes
(no demos, no actions: one rendered first frame per seed, labelled with the simulator's poses), for Stage I's
`init_weights`.

Why (session 6, CPU): the Stage I policy's grasp point is 1.7–1.9 cm off on fresh scenes (0.7–0.8 cm on its 100
training scenes), and a linear read-out of its features locates the object no better. The same encoder trained
directly on object positions is 1.2 / 2.0 cm off on fresh scenes after 100 training scenes, but 0.2 / 0.35 cm after
1,000: what it lacks is scene diversity, which the twin gives for the price of a render.

    python experiments/encoder_pretrain.py --scenes 5000 --steps 3000 --out $OUT/enc
    python experiments/stage1_pick_place.py ... --init-weights $OUT/enc/image_encoder.safetensors

Only sim-domain scenes are used (the real-proxy plays the real world, whose poses a real lab does not have).
Writes `image_encoder.safetensors` (the trained part: the stages up to the keypoints and the keypoint module, under
the policy's names `image_encoder.*`) and `results.json` (rms error in metres per label on held-out seeds 300000+).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.parallel import EnvPool  # noqa: E402

LABELS = ("object_x", "object_y", "object_z", "tray_x", "tray_y")


def scene(env, state, seed):
    """The first camera frame of `seed` and its labels (object xyz, tray xy), float32[5]."""
    import numpy as np

    obs, _ = env.reset(seed=seed)
    labels = np.concatenate([env.obj.pose.p[0].cpu().numpy(), env.tray.pose.p[0, :2].cpu().numpy()]).astype(np.float32)
    return obs["observation.images.main"][0].cpu().numpy(), labels  # poses live on the GPU when it renders


def scenes(task_cfg, seeds, workers):
    import numpy as np
    import torch

    with EnvPool(task_cfg, "sim", workers) as pool:
        out = pool.map(scene, list(seeds))
    return torch.from_numpy(np.stack([o[0] for o in out])), torch.from_numpy(np.stack([o[1] for o in out]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--policy", default="vla_flow", help="configs/policy/<name>.yaml (its image encoder is trained)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML", help="override policy config keys")
    p.add_argument("--scenes", type=int, default=5000, help="training scenes (seeds 0…)")
    p.add_argument("--heldout", type=int, default=200, help="held-out scenes (seeds 300000…)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--out", default="runs/encoder_pretrain")
    a = p.parse_args()

    import torch
    import yaml
    from safetensors.torch import save_file
    from torch import nn

    from cotrain.data.spec import FeatureSpec
    from cotrain.envs.config import load_task_config
    from cotrain.policies import make_policy, policy_config_from_dict
    from cotrain.policies.checkpoint import merge_overrides
    from cotrain.runtime import pick_device

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs/policy" / f"{a.policy}.yaml").read_text())
    raw = merge_overrides(raw, {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in a.set)})
    cfg = policy_config_from_dict(raw)
    if cfg.keypoints <= 0:
        sys.exit(f"{a.policy}: the pretraining reads the encoder's spatial-softmax keypoints; set keypoints > 0")
    task_cfg = load_task_config("pick_place")
    t = time.time()
    x_train, y_train = scenes(task_cfg, range(a.scenes), a.workers)
    x_test, y_test = scenes(task_cfg, range(300_000, 300_000 + a.heldout), a.workers)
    print(f"[scenes] {a.scenes} + {a.heldout} rendered in {time.time() - t:.0f}s", flush=True)

    device = pick_device("auto")
    stats = {k: {n: torch.zeros(d) if n in ("mean", "min") else torch.ones(d) for n in ("mean", "std", "min", "max")}
             for k, d in (("observation.state", 8), ("action", 7))}  # unused: only the image encoder is trained
    encoder = make_policy(cfg, FeatureSpec(), stats).image_encoder.to(device)
    readout = nn.Sequential(nn.Linear(2 * cfg.keypoints, 256), nn.GELU(), nn.Linear(256, len(LABELS))).to(device)
    mean, std = y_train.mean(0).to(device), y_train.std(0).to(device)

    def predict(images: torch.Tensor) -> torch.Tensor:
        """Labels in metres from uint8 images, through the encoder's stages up to its keypoints."""
        return readout(encoder.keypoint_coordinates(images.to(device)).flatten(1)) * std + mean

    # what keypoint_coordinates runs: the stages up to the keypoint stage and the keypoint module
    trained = tuple(f"convs.{i}." for i in range(encoder.keypoint_stage + 1)) + ("keypoints.",)
    params = [p for name, p in encoder.named_parameters() if name.startswith(trained)]
    opt = torch.optim.AdamW([*params, *readout.parameters()], lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
    gen = torch.Generator().manual_seed(0)
    for step in range(a.steps):
        idx = torch.randint(0, len(x_train), (a.batch,), generator=gen)
        loss = (((predict(x_train[idx]) - y_train[idx].to(device)) / std) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0:
            print(f"[pretrain] step {step + 1}: loss {loss.item():.4f}", flush=True)

    with torch.no_grad():
        def rms(x, y):
            err = torch.cat([predict(x[i:i + 256]).cpu() - y[i:i + 256] for i in range(0, len(x), 256)])
            return dict(zip(LABELS, err.pow(2).mean(0).sqrt().tolist()))
        results = {"args": vars(a), "train_rms_m": rms(x_train[:1000], y_train[:1000]),
                   "heldout_rms_m": rms(x_test, y_test)}
    print(json.dumps(results["heldout_rms_m"]), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = {f"image_encoder.{k}": v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()
               if k.startswith(trained)}  # the later stages and the token projection keep Stage I's initialisation
    tmp = out / "image_encoder.safetensors.tmp"
    save_file(weights, str(tmp))
    tmp.replace(out / "image_encoder.safetensors")
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
