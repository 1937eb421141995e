"""Policy checkpoints: one directory, written to a temporary sibling and renamed into place.

    <ckpt>/model.safetensors        weights (and the normalisation buffers)
    <ckpt>/policy_config.json       the resolved policy config (with its `type`), rebuilt through the factory
    <ckpt>/norm_stats.safetensors   {"observation.state", "action"} × {mean, std, min, max}
    <ckpt>/feature_spec.json        FeatureSpec.to_dict()
    <ckpt>/training_state.pt        optional: step, optimizer state, RNG states, extra (exact resume)
    <ckpt>/checkpoint.json          format version and step, for humans and tools

A policy is checkpointable when it has `.config` (a registered policy config), `.spec` and `.norm_stats()`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from cotrain.data.spec import FeatureSpec
from cotrain.policies.base import Policy
from cotrain.policies.factory import make_policy, policy_config_from_dict, policy_config_to_dict
from cotrain.policies.normalize import STAT_NAMES

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "policy_config.json"
STATS_FILE = "norm_stats.safetensors"
SPEC_FILE = "feature_spec.json"
TRAINING_FILE = "training_state.pt"
META_FILE = "checkpoint.json"


@dataclass
class TrainingState:
    step: int | None
    extra: dict[str, Any]


def save_checkpoint(path: str | Path, policy: Policy, *, optimizer: torch.optim.Optimizer | None = None,
                    step: int | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write `policy` (and, when any of optimizer/step/extra is given, the training state with all RNG states) to
    the directory `path`, replacing an existing one. `extra` may hold tensors, numbers, strings, None, and lists /
    dicts of those (e.g. a scheduler's or a data sampler's state_dict)."""
    for attr in ("config", "spec", "norm_stats"):
        if not hasattr(policy, attr):
            raise TypeError(f"save_checkpoint: {type(policy).__name__} has no `{attr}`; a checkpointable policy needs "
                            "`.config`, `.spec` and `.norm_stats()`")
    if extra is not None:
        _check_plain(extra, "extra")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_model(policy, str(tmp / MODEL_FILE))
        _write_json(tmp / CONFIG_FILE, policy_config_to_dict(policy.config))
        _write_json(tmp / SPEC_FILE, policy.spec.to_dict())
        stats = policy.norm_stats()
        save_file({f"{key}/{name}": stats[key][name].contiguous() for key in stats for name in STAT_NAMES},
                  str(tmp / STATS_FILE))
        has_training = optimizer is not None or step is not None or extra is not None
        if has_training:
            torch.save({"step": step, "optimizer": None if optimizer is None else optimizer.state_dict(),
                        "rng": capture_rng(), "extra": extra or {}}, tmp / TRAINING_FILE)
        _write_json(tmp / META_FILE, {"format": FORMAT_VERSION, "step": step, "has_training_state": has_training})
        for f in tmp.iterdir():
            _fsync(f)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_policy(path: str | Path, expected_spec: FeatureSpec | None = None, device: str | torch.device = "cpu",
                overrides: dict[str, Any] | None = None) -> Policy:
    """Rebuild the policy from the checkpoint's config and load its weights; refuse a checkpoint whose feature spec
    differs from `expected_spec` (SpecMismatchError naming every differing field). `overrides` replaces config keys
    before the policy is built (nested dicts merge, e.g. {"head": {"rl_method": "flow_noise"}}); the keys are
    checked like the config file's, and weights must still fit."""
    path = Path(path)
    _check_checkpoint_dir(path)
    spec = FeatureSpec.from_dict(json.loads((path / SPEC_FILE).read_text()))
    if expected_spec is not None:
        expected_spec.check_matches(spec, where=f"checkpoint {path}")
    cfg_dict = merge_overrides(json.loads((path / CONFIG_FILE).read_text()), overrides or {})
    cfg = policy_config_from_dict(cfg_dict, where=str(path / CONFIG_FILE) + (" + overrides" if overrides else ""))
    flat = load_file(str(path / STATS_FILE))
    stats = {key: {name: flat[f"{key}/{name}"] for name in STAT_NAMES} for key in {k.split("/")[0] for k in flat}}
    policy = make_policy(cfg, spec, stats, load_pretrained=False)
    missing, unexpected = load_model(policy, str(path / MODEL_FILE), strict=False, device=str(device))
    if missing or unexpected:
        raise ValueError(f"{path / MODEL_FILE}: weights do not fit the config in {CONFIG_FILE} "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return policy.to(device)


def _init_weights_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init weights {path}: no such file")
    return path


def partial_weight_names(path: str | Path) -> list[str]:
    """The tensor names in a safetensors file of some of a policy's weights (what `load_partial_weights` copies)."""
    from safetensors import safe_open

    with safe_open(str(_init_weights_file(path)), "pt") as f:
        return list(f.keys())


def load_partial_weights(policy: Policy, path: str | Path) -> int:
    """Copy the tensors of a safetensors file into the same-named weights of `policy` (e.g. an image encoder
    pretrained by `cotrain.pretrain_encoder`: keys `image_encoder.*`); the rest keep their values. Every key
    must name a weight of the policy with the same shape. Returns how many tensors were copied."""
    path = _init_weights_file(path)
    weights, own = load_file(str(path)), policy.state_dict()
    for key, value in weights.items():
        if key not in own:
            raise ValueError(f"{path}: '{key}' is not a weight of {type(policy).__name__} "
                             f"(it has e.g. {sorted(own)[:3]})")
        if own[key].shape != value.shape:
            raise ValueError(f"{path}: '{key}' has shape {tuple(value.shape)}, the policy's {tuple(own[key].shape)}")
    policy.load_state_dict(weights, strict=False)
    return len(weights)


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied key by key; a dict value merges into the dict it replaces."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge_overrides(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_training_state(path: str | Path, optimizer: torch.optim.Optimizer | None = None,
                        restore_rng: bool = True) -> TrainingState:
    """Restore the optimizer (if given) and the torch / CUDA / numpy / python RNG states; return step and extra."""
    path = Path(path)
    _check_checkpoint_dir(path)
    if not (path / TRAINING_FILE).exists():
        raise FileNotFoundError(f"checkpoint {path} has no {TRAINING_FILE} (saved without optimizer/step/extra)")
    state = torch.load(path / TRAINING_FILE, map_location="cpu", weights_only=True)
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"{path / TRAINING_FILE}: no optimizer state was saved")
        optimizer.load_state_dict(state["optimizer"])
    if restore_rng:
        apply_rng(state["rng"])
    return TrainingState(step=state["step"], extra=state["extra"])


def capture_rng() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def apply_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])


def _check_checkpoint_dir(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path}: no such directory")
    missing = [f for f in (MODEL_FILE, CONFIG_FILE, STATS_FILE, SPEC_FILE) if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"checkpoint {path}: missing {missing}")


def _check_plain(value: Any, where: str) -> None:
    """extra must load under torch.load(weights_only=True): refuse anything else at save time, naming the key."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"save_checkpoint: {where} has a key of type {type(k).__name__}; use str or int")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (torch.Tensor, bool, int, float, str))):
        raise TypeError(f"save_checkpoint: {where} is a {type(value).__name__}; extra may hold tensors, numbers, "
                        "strings, None, lists and dicts")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(tmp: Path, path: Path) -> None:
    """Rename the finished `tmp` to `path`; an existing `path` is first renamed aside and removed after."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.rename(path, old)
    os.rename(tmp, path)
    _fsync(path.parent)
    if old is not None:
        shutil.rmtree(old)
