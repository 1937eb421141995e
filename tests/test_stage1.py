"""Stage I end to end on tiny datasets: α in the batches it trains on, checkpoints, exact resume, CLI errors."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cotrain import checkpoints
from cotrain.data import DatasetWriter, FeatureSpec, Provenance
from cotrain.data.config import DataConfig
from cotrain.metrics import WandbConfig
from cotrain.stage1 import Stage1Config, train

SPEC = FeatureSpec()
TINY_POLICY = {
    "type": "small_vla", "chunk_size": 4, "d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_ratio": 2,
    "cnn_channels": [8, 16], "value_hidden": 16, "head": {"type": "flow", "num_steps": 2, "n_layers": 1},
}


def write_dataset(root, domain, n_episodes, seed):
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, SPEC, commit_every=n_episodes) as w:
        for ep in range(n_episodes):
            for t in range(8):
                img = np.full((128, 128, 3), 30 * ep + 5 * t, np.uint8)
                w.add_frame(img, rng.standard_normal(8), rng.uniform(-1, 1, 7), f"task {domain}")
            w.save_episode(Provenance(domain, "expert", ep))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset(root / "real", "real_proxy", 2, 0)
    write_dataset(root / "sim", "sim", 3, 1)
    return root


def config(data, out, **kw):
    base = dict(policy=dict(TINY_POLICY), data=DataConfig(real=[str(data / "real")], sim=[str(data / "sim")],
                alpha=0.25, batch_size=8, seed=0), wandb=WandbConfig(mode="disabled"), steps=6, warmup_steps=2,
                log_every=1, save_every=3, out=str(out), device="cpu", seed=0)
    base.update(kw)
    return Stage1Config(**base)


def read_metrics(out):
    with open(out / "metrics.csv") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_stage1_trains_on_the_alpha_mixture_and_checkpoints(data, tmp_path):
    last = train(config(data, tmp_path / "run"))
    rows = read_metrics(tmp_path / "run")
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert all(float(r["train/real_fraction"]) == 0.25 for r in rows.values())  # 2 of 8 every batch
    assert (last / "model.safetensors").exists() and (tmp_path / "run" / "ckpt" / "step_3").exists()
    # one directory per save and the LATEST pointer (`cotrain.checkpoints`): no copies
    assert last == tmp_path / "run" / "ckpt" / "step_6"
    assert sorted(p.name for p in (tmp_path / "run" / "ckpt").iterdir()) == ["LATEST", "step_3", "step_6"]
    assert (tmp_path / "run" / "loss.png").exists()


@pytest.mark.parametrize("scaled", [False, True], ids=["one_group", "init_lr_scale"])
def test_resume_continues_exactly(data, tmp_path, scaled):
    kw = {}
    if scaled:  # a second optimizer group: the resumed run must rebuild it the same way
        from safetensors.torch import save_file

        save_file({"image_encoder.proj.weight": torch.full((32, 16, 1, 1), 0.01)}, str(tmp_path / "enc.safetensors"))
        kw = dict(init_weights=str(tmp_path / "enc.safetensors"), init_lr_scale=0.1)
    train(config(data, tmp_path / "full", **kw))
    # a run that stopped after step 3 (its LATEST names step_3), resumed from its run directory
    train(config(data, tmp_path / "part", steps=6, save_every=3, **kw))
    checkpoints.mark_latest(tmp_path / "part", 3)
    resumed_out = tmp_path / "resumed"
    last = train(config(data, resumed_out, resume=str(tmp_path / "part"), **kw))
    assert last == resumed_out / "ckpt" / "step_6" and (resumed_out / "ckpt" / "LATEST").read_text() == "step_6\n"
    full, resumed = read_metrics(tmp_path / "full"), read_metrics(resumed_out)
    for step in (4, 5, 6):
        assert float(resumed[step]["train/sft_loss"]) == pytest.approx(float(full[step]["train/sft_loss"]), rel=1e-6)
    a = load_file(str(checkpoints.latest(tmp_path / "full") / "model.safetensors"))
    b = load_file(str(last / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_cli_mistyped_key_is_one_clear_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "cotrain.stage1", "data.alhpa=0.3", f"out={tmp_path}"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "alhpa" in r.stderr
    r = subprocess.run([sys.executable, "-m", "cotrain.stage1", "policy.d_modle=64", "data.alpha=1.0",
                        "data.real=[nowhere]", f"out={tmp_path}"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "d_modle" in r.stderr


def test_cli_missing_dataset_names_it(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "cotrain.stage1", "data.alpha=1.0", f"data.real=[{tmp_path}/nope]",
                        f"out={tmp_path}/run", "wandb.mode=disabled"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode != 0 and "nope: dataset root does not exist" in r.stderr


def test_checkpoint_holds_the_weight_average_and_resume_keeps_training_the_online_weights(data, tmp_path):
    from cotrain.ema import ema_decay_at
    from cotrain.policies import load_training_state

    train(config(data, tmp_path / "run", steps=3, save_every=3, ema_decay=0.5))
    ckpt = checkpoints.resolve(tmp_path / "run")
    averaged = load_file(str(ckpt / "model.safetensors"))
    state = load_training_state(ckpt, restore_rng=False)
    online = state.extra["online_weights"]
    assert state.extra["ema_updates"] == 3
    # 3 updates with d_t = 0.1, 2/11, 0.25 (all below 0.5): the average lies strictly between init and trained weights
    assert [ema_decay_at(t, 0.5) for t in range(3)] == pytest.approx([0.1, 2 / 11, 0.25])
    moved = [k for k in averaged if k.startswith("head.") and not torch.equal(averaged[k], online[k].cpu())]
    assert moved, "the checkpoint's weights must be the average, not the trained weights"
    no_ema = train(config(data, tmp_path / "plain", steps=3, save_every=3, ema_decay=0.0))
    plain = load_file(str(no_ema / "model.safetensors"))
    assert all(torch.equal(plain[k], online[k].cpu()) for k in plain)  # same seed, same training: online = plain


def test_init_weights_start_the_named_weights_from_the_file(data, tmp_path):
    from safetensors.torch import save_file

    from cotrain.policies import load_policy

    donor = load_policy(train(config(data, tmp_path / "donor", steps=2, seed=1)))  # other seed: other weights
    encoder = {k: v.contiguous() for k, v in donor.state_dict().items() if k.startswith("image_encoder.")}
    save_file(encoder, str(tmp_path / "encoder.safetensors"))
    # lr 0: the weights Stage I starts from are the ones it saves
    init = str(tmp_path / "encoder.safetensors")
    started = load_policy(train(config(data, tmp_path / "run", lr=0.0, init_weights=init)))
    plain = load_policy(train(config(data, tmp_path / "plain", lr=0.0)))
    own = started.state_dict()
    assert all(torch.equal(own[k], v) for k, v in encoder.items())
    assert not torch.equal(plain.state_dict()["image_encoder.proj.weight"], encoder["image_encoder.proj.weight"])
    assert torch.equal(own["state_in.weight"], plain.state_dict()["state_in.weight"])  # the rest: seed 0's init


def test_init_weights_that_do_not_fit_are_refused(data, tmp_path):
    from safetensors.torch import save_file

    save_file({"image_encoder.proj.weight": torch.zeros(3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"image_encoder.proj.weight' has shape \(3, 3\)"):
        train(config(data, tmp_path / "run", init_weights=str(tmp_path / "bad.safetensors")))
    save_file({"encoder.x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="'encoder.x' is not a weight of SmallVLAPolicy"):
        train(config(data, tmp_path / "run2", init_weights=str(tmp_path / "other.safetensors")))


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_init_lr_scale_scales_the_first_step_of_the_loaded_weights(data, tmp_path, scale):
    """One AdamW step moves a weight by lr·g/(|g|+ε) ≈ lr per coordinate (clipping rescales g, Adam ignores it):
    the loaded weights move by scale·lr at most, the others by lr; scale 0 leaves them bit-identical."""
    from safetensors.torch import save_file

    from cotrain.policies import load_policy

    donor = load_policy(train(config(data, tmp_path / "donor", steps=1, seed=1)))
    init = {k: v.contiguous() for k, v in donor.state_dict().items() if k.startswith("image_encoder.")}
    save_file(init, str(tmp_path / "encoder.safetensors"))
    lr = 1e-3
    trained = load_policy(train(config(data, tmp_path / "run", steps=1, warmup_steps=1, lr=lr, weight_decay=0.0,
                                       ema_decay=0.0, init_weights=str(tmp_path / "encoder.safetensors"),
                                       init_lr_scale=scale))).state_dict()
    start = load_policy(train(config(data, tmp_path / "start", steps=1, lr=0.0, ema_decay=0.0))).state_dict()
    moved_loaded = max((trained[k] - v).abs().max().item() for k, v in init.items())
    moved_other = max((trained[k] - start[k]).abs().max().item() for k in start if k.startswith("state_in."))
    assert moved_other == pytest.approx(lr, rel=1e-3)
    if scale == 0.0:
        assert all(torch.equal(trained[k], v) for k, v in init.items())
    else:
        assert moved_loaded == pytest.approx(scale * lr, rel=1e-3)


def test_init_lr_scale_without_init_weights_or_below_zero_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="set init_weights"):
        config(data, tmp_path, init_lr_scale=0.5)
    with pytest.raises(ValueError, match="init_lr_scale must be ≥ 0"):
        config(data, tmp_path, init_weights="x.safetensors", init_lr_scale=-1.0)
