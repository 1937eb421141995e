"""Pretrain the small VLA's image encoder to locate the task's objects in many randomised twin scenes, for Stage I's
`init_weights`. No demos and no actions: one rendered first frame per seed, labelled with the simulator's poses
(`TwinTaskEnv.scene_labels`: for pick_place the object's xyz and the tray's xy).

    python -m cotrain.pretrain_encoder task=pick_place scenes=5000 out=runs/encoder
    python -m cotrain.stage1 ... init_weights=runs/encoder/image_encoder.safetensors

Why: from 100 demos the Stage I policy learns its 100 scenes, not where things are in a new one (grasp point
1.7–1.9 cm off on fresh scenes, 0.7–0.8 cm on its own; docs/results.md). Scenes cost one render in the twin,
so the encoder learns localisation from thousands of them; Stage I then starts from it (sim success on 100 fresh
seeds 68–71 % → 84 %, 79 % over 200; H100). Only a twin domain is rendered (`domain`: sim, or the calibrated `twin` of
`python -m cotrain.calibrate`): a real lab has no poses for its real scenes.

Trained: the encoder's stages up to its spatial-softmax keypoints and the keypoint module (what
`ImageEncoder.keypoint_coordinates` runs), through a small MLP read-out from the keypoints' (x, y) to the
standardised labels. The scenes are training data: each in a domain drawn around `domain` from the task
config's `randomization` (`make_task_env(randomize=True)`; none with zero ranges), held-out scenes alike.
Written to `out/`: `image_encoder.safetensors` (the trained tensors under the policy's names,
`image_encoder.*`; the later stages keep Stage I's initialisation) and `results.json` (rms error per label, in the
labels' units, on the first 1,000 training scenes and on `heldout` fresh seeds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import hydra
import torch
from omegaconf import OmegaConf
from torch import nn

from cotrain.config import register_schema
from cotrain.runtime import atomic_path, pick_device, seed_everything, write_json_atomic

log = logging.getLogger("cotrain.pretrain_encoder")


@dataclass
class EncoderPretrainConfig:
    task: dict[str, Any] = field(default_factory=dict)
    """Task config (configs/task/*.yaml); its `domain` and train variation are rendered."""
    domain: str = "sim"
    """Twin domain the scenes are rendered in (a domain of `task`): `sim`, or the calibrated `twin` that
    `python -m cotrain.calibrate` writes; never the real-proxy (a real lab has no poses for its real scenes)."""
    policy: dict[str, Any] = field(default_factory=dict)
    """Policy config (configs/policy/*.yaml) whose image encoder is trained: a small VLA with keypoints > 0."""
    scenes: int = 5000
    """Training scenes, seeds 0 … scenes-1."""
    heldout: int = 200
    """Fresh scenes for the reported error, seeds heldout_seed …"""
    heldout_seed: int = 300_000
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    """AdamW learning rate, cosine-decayed to 0 over `steps`."""
    weight_decay: float = 1e-4
    workers: int = 4
    """Render processes (one env each; 0 = render in this process)."""
    out: str = "runs/encoder_pretrain"
    device: str = "auto"
    seed: int = 0
    """Seeds the encoder's initialisation and the batches."""

    def __post_init__(self) -> None:
        for name in ("scenes", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"pretrain_encoder: {name} must be ≥ 1, got {getattr(self, name)}")
        if self.heldout < 0 or self.workers < 0:
            raise ValueError("pretrain_encoder: heldout and workers must be ≥ 0")
        if self.domain == "real_proxy":
            raise ValueError("pretrain_encoder: domain=real_proxy renders the real world's stand-in, whose object "
                             "poses a real lab does not have; render a twin domain")


register_schema("pretrain_encoder_schema", EncoderPretrainConfig)


# ----------------------------------------------------------------------------------------------- scenes
def scene_sample(env, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first camera frame of `seed` (uint8 [H, W, 3]) and its labels (float32 [L]) from a single-env twin task."""
    from cotrain.data.spec import IMAGE_KEY

    obs, _ = env.reset(seed=seed)
    return obs[IMAGE_KEY][0].cpu(), env.scene_labels()[0].float().cpu()  # with GPU rendering both come back on cuda


def _pool_sample(env, state, seed):
    image, labels = scene_sample(env, seed)
    return image.numpy(), labels.numpy()


def render_scenes(task_cfg, seeds: list[int], workers: int, domain: str = "sim") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 [n, H, W, 3], float32 [n, L]) for `seeds` in `domain`, randomised per seed (training data), over
    `workers` processes (0: here)."""
    if workers == 0:
        from cotrain.envs.make import make_task_env

        env = make_task_env(task_cfg, domain, obs_mode="rgb", randomize=True)
        try:
            images, labels = zip(*(scene_sample(env, s) for s in seeds))
        finally:
            env.close()
        return torch.stack(images), torch.stack(labels)
    import numpy as np

    from cotrain.envs.pool import EnvPool

    with EnvPool(task_cfg, domain, workers, randomize=True) as pool:
        out = pool.map(_pool_sample, list(seeds))
    return torch.from_numpy(np.stack([o[0] for o in out])), torch.from_numpy(np.stack([o[1] for o in out]))


# ----------------------------------------------------------------------------------------------- training
def keypoint_prefixes(encoder) -> tuple[str, ...]:
    """Parameter-name prefixes (within the encoder) of what `keypoint_coordinates` runs: the trained set."""
    if getattr(encoder, "keypoints", None) is None:
        raise ValueError("pretrain_encoder: the policy's image encoder has no spatial-softmax keypoints; "
                         "set the policy's keypoints > 0")
    return tuple(f"convs.{i}." for i in range(encoder.keypoint_stage + 1)) + ("keypoints.",)


def fit_encoder(encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int,
                lr: float, weight_decay: float = 1e-4, seed: int = 0,
                log_every: int = 500) -> Callable[[torch.Tensor], torch.Tensor]:
    """Train `encoder`'s keypoint stages (in place) with an MLP read-out to regress `labels` [n, L] from `images`
    [n, H, W, 3] (uint8) by MSE in standardised units. Returns `predict(images) -> labels` in the labels' units."""
    device = next(encoder.parameters()).device
    with torch.no_grad():
        k = encoder.keypoint_coordinates(images[:1].to(device)).shape[1]
    gen = torch.Generator().manual_seed(seed)
    readout = nn.Sequential(nn.Linear(2 * k, 256), nn.GELU(), nn.Linear(256, labels.shape[1])).to(device)
    mean, std = labels.mean(0).to(device), labels.std(0).clamp(min=1e-6).to(device)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return readout(encoder.keypoint_coordinates(x.to(device)).flatten(1)) * std + mean

    prefixes = keypoint_prefixes(encoder)
    params = [p for name, p in encoder.named_parameters() if name.startswith(prefixes)]
    opt = torch.optim.AdamW([*params, *readout.parameters()], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    encoder.train()
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        loss = (((predict(images[idx]) - labels[idx].to(device)) / std) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.info("step %d/%d: loss %.4f (standardised MSE)", step + 1, steps, loss.item())
    encoder.eval()
    return predict


@torch.no_grad()
def rms_error(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
              batch: int = 256) -> torch.Tensor:
    """Root-mean-square error per label [L] of `predict` over `images`."""
    err = torch.cat([predict(images[i:i + batch]).cpu() - labels[i:i + batch] for i in range(0, len(images), batch)])
    return err.pow(2).mean(0).sqrt()


def save_encoder(encoder: nn.Module, path: Path, prefix: str = "image_encoder.") -> int:
    """The trained tensors (`keypoint_prefixes`) under the policy's names, written atomically; returns their count."""
    from safetensors.torch import save_file

    prefixes = keypoint_prefixes(encoder)
    weights = {prefix + k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()
               if k.startswith(prefixes)}
    with atomic_path(path) as tmp:
        save_file(weights, str(tmp))
    return len(weights)


# ----------------------------------------------------------------------------------------------- entry point
def run(cfg: EncoderPretrainConfig) -> dict:
    from cotrain.data.spec import ACTION_KEY, STATE_KEY, FeatureSpec
    from cotrain.envs.config import TaskConfig
    from cotrain.envs.make import ENV_CLASSES
    from cotrain.policies import make_policy, policy_config_from_dict

    task_cfg = TaskConfig.from_dict(dict(cfg.task), source=f"configs/task/{cfg.task.get('task')}.yaml")
    task_cfg.domain(cfg.domain)  # an unknown domain fails here, before any rendering
    policy_cfg = policy_config_from_dict(dict(cfg.policy), where="policy")
    spec = FeatureSpec()
    # normalisation statistics are unused: only the image encoder runs
    stats = {key: {"mean": torch.zeros(d), "std": torch.ones(d), "min": -torch.ones(d), "max": torch.ones(d)}
             for key, d in ((STATE_KEY, spec.state_dim), (ACTION_KEY, spec.action_dim))}
    seed_everything(cfg.seed)
    encoder = getattr(make_policy(policy_cfg, spec, stats), "image_encoder", None)
    if encoder is None:
        raise ValueError(f"pretrain_encoder: policy type '{cfg.policy.get('type')}' has no image_encoder to pretrain")
    keypoint_prefixes(encoder)  # a policy without keypoints fails here, before any rendering
    label_names = ENV_CLASSES[task_cfg.task].SCENE_LABELS

    t = time.time()
    heldout = list(range(cfg.heldout_seed, cfg.heldout_seed + cfg.heldout))
    images, labels = render_scenes(task_cfg, list(range(cfg.scenes)) + heldout, cfg.workers, cfg.domain)  # one pool
    x_train, x_test = images.split([cfg.scenes, cfg.heldout])
    y_train, y_test = labels.split([cfg.scenes, cfg.heldout])
    log.info("%d + %d scenes rendered in %.0f s", cfg.scenes, cfg.heldout, time.time() - t)

    encoder.to(pick_device(cfg.device))
    t = time.time()
    predict = fit_encoder(encoder, x_train, y_train, cfg.steps, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.seed)
    results = {"config": asdict(cfg), "train_seconds": time.time() - t, "labels": list(label_names),
               "train_rms": dict(zip(label_names, rms_error(predict, x_train[:1000], y_train[:1000]).tolist()))}
    if heldout:
        results["heldout_rms"] = dict(zip(label_names, rms_error(predict, x_test, y_test).tolist()))
        log.info("held-out rms error: %s", {k: round(v, 4) for k, v in results["heldout_rms"].items()})
    out = Path(cfg.out)
    n = save_encoder(encoder, out / "image_encoder.safetensors")
    write_json_atomic(out / "results.json", results)
    log.info("wrote %d tensors to %s", n, out / "image_encoder.safetensors")
    return results


@hydra.main(config_path="../configs", config_name="pretrain_encoder", version_base="1.3")
def main(cfg) -> None:
    run(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
