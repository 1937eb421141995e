"""Stage I's fast path: device batches equal the mixture's, the graphed step equals `sft_step`, exact resume, and
several seeds in one process equal the runs trained alone. CPU here; the CUDA-graph variant runs where CUDA is."""

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cotrain.data import ACTION_KEY, IMAGE_KEY, STATE_KEY, ChunkDataset, FeatureSpec, Mixture, store_from_episodes
from cotrain.data.config import DataConfig
from cotrain.data.device_batches import DeviceBatches
from cotrain.ema import EMA
from cotrain.graphed_step import GraphedStep, Run, capturable_adamw
from cotrain.metrics import WandbConfig
from cotrain.policies import make_policy, policy_config_from_dict, rng
from cotrain.policies.tokenizer import encode_tasks
from cotrain.stage1 import Stage1Config, lr_at, sft_step, train, train_seeds

TINY = {"type": "small_vla", "chunk_size": 4, "d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_ratio": 2,
        "cnn_channels": [8, 16], "value_hidden": 16, "image_shift": 2, "state_noise": 0.1,
        "head": {"type": "flow", "num_steps": 2, "n_layers": 1}}


def store(n_episodes, length, value, task, seed):
    rng_ = np.random.default_rng(seed)
    episodes = [[{"image": rng_.integers(0, 256, (128, 128, 3), dtype=np.uint8),
                  "state": (value + 0.1 * rng_.standard_normal(8)).astype(np.float32),
                  "action": rng_.uniform(-1, 1, 7).astype(np.float32), "task": task}
                 for _ in range(length)] for _ in range(n_episodes)]
    return ChunkDataset(store_from_episodes(episodes), 4)


REAL = [store(2, 5, 5.0, "put it in", 0)]
SIM = [store(2, 6, -5.0, "put it in", 1), store(1, 7, -5.0, "put it in", 2)]


def tokenize(tasks):
    return encode_tasks(tasks, 96)[0]


@pytest.mark.parametrize("alpha,batch_size", [(0.25, 8), (0.3, 10), (0.0, 4), (1.0, 4)])
def test_device_batches_are_the_mixture_batches_and_alpha_is_exact(alpha, batch_size):
    mixture = Mixture(REAL, SIM, alpha, batch_size, seed=3)
    data = DeviceBatches(mixture, 5, 40, torch.device("cpu"), tokenize)
    for k in range(5, 40):
        want, got = mixture.batch(k), data.batch(torch.tensor(k))
        assert torch.equal(got.image, want[IMAGE_KEY]) and torch.equal(got.state, want[STATE_KEY])
        assert torch.equal(got.action, want[ACTION_KEY]) and torch.equal(got.action_is_pad, want["action_is_pad"])
        assert torch.equal(got.is_real, want["is_real"])
        assert torch.equal(got.task_ids, tokenize(want["task"]))
        # exactly round(k·α·B) real samples drawn before batch k; real ones carry state ≈ +5
        assert int(got.is_real.sum()) == round((k + 1) * alpha * batch_size) - round(k * alpha * batch_size)
        assert (got.state[got.is_real, 0] > 0).all() and (got.state[~got.is_real, 0] < 0).all()
    if alpha == 0.3:  # 0.3·10 = 3 real per batch, every batch
        assert all(int(data.batch(torch.tensor(k)).is_real.sum()) == 3 for k in range(5, 40))


def tiny_policy(seed):
    torch.manual_seed(seed)
    return make_policy(policy_config_from_dict(dict(TINY)), FeatureSpec(),
                       Mixture(REAL, SIM, 0.25, 8).norm_stats().stats).train()


def test_graphed_step_equals_sft_step_with_the_same_random_numbers():
    """Three steps of the plain path (host batches, `sft_step`, float lr) and of the fast path (device batches,
    tensor lr, fused AdamW, counted EMA) from the same weights and the same generator state: same losses and weights."""
    cfg = Stage1Config(policy=dict(TINY), lr=1e-3, warmup_steps=2, steps=3, ema_decay=0.9)
    mixture = Mixture(REAL, SIM, 0.25, 8, seed=0)
    plain, fast = tiny_policy(0), tiny_policy(0)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), fast.state_dict().values()))
    # fused, as the plain path runs on CUDA: AdamW turns float noise in a near-zero gradient (a conv bias ahead of a
    # normalisation) into a full lr-sized step, so two AdamW implementations are compared only through the loss
    opt = torch.optim.AdamW(plain.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    ema = EMA(plain, cfg.ema_decay)
    gen = torch.Generator().manual_seed(7)
    plain_losses = []
    for k in range(3):
        opt.param_groups[0]["lr"] = lr_at(k, cfg)
        with rng.draw_from(gen):
            loss, _ = sft_step(plain, opt, ema, mixture.batch(k), cfg.grad_clip, k)
        plain_losses.append(loss.item())

    device = torch.device("cpu")
    f_opt = capturable_adamw([{"params": list(fast.parameters()), "lr_scale": 1.0}], cfg.weight_decay, device)
    table = torch.tensor([[lr_at(k, cfg)] for k in range(3)], dtype=torch.float64).float()
    run = Run(fast, f_opt, EMA(fast, cfg.ema_decay), torch.Generator().manual_seed(7), table)
    engine = GraphedStep([run], DeviceBatches(mixture, 0, 3, device, tokenize), grad_clip=cfg.grad_clip,
                         image_shift=2, has_pad=False, start=0)
    fast_losses = []
    for _ in range(3):
        engine.step()
        fast_losses.append(run.loss.item())
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    assert plain_losses[0] != plain_losses[1]  # the steps differ: the comparison is not of one repeated number
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values()):
        # key biases (softmax ignores them) and the first conv's bias (ahead of a normalisation) get a gradient of
        # float noise only, which AdamW scales up to lr-sized steps of either sign: bounded by lr per step there
        noise_only = name.endswith("kv.bias") or name == "image_encoder.convs.0.0.bias"
        assert torch.allclose(a, b, atol=3 * 2 * cfg.lr if noise_only else 1e-6), name
    assert all(torch.allclose(ema.shadow[k], run.ema.shadow[k], atol=6e-3 if 'bias' in k else 1e-6) for k in ema.shadow)
    engine.sync_counts()
    assert run.ema.updates == ema.updates == 3 and int(engine.step_t) == 3


@pytest.fixture
def base(tmp_path):
    return Stage1Config(policy=dict(TINY), data=DataConfig(alpha=0.25, batch_size=8, seed=0),
                        wandb=WandbConfig(mode="disabled"), steps=6, warmup_steps=2, log_every=1, save_every=3,
                        out=str(tmp_path / "run"), device="cpu", seed=0, fast=True, ema_decay=0.9)


def losses(out):
    with open(out / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/sft_loss"]) for r in csv.DictReader(f)}


def weights(ckpt):
    return load_file(str(ckpt / "model.safetensors"))


def test_fast_run_resumes_exactly(base, tmp_path):
    full = train(replace(base, out=str(tmp_path / "full")), REAL, SIM)
    train(replace(base, out=str(tmp_path / "part")), REAL, SIM)
    resumed = train(replace(base, out=str(tmp_path / "resumed"), resume=str(tmp_path / "part" / "ckpt" / "step_3")),
                    REAL, SIM)
    a, b = losses(tmp_path / "full"), losses(tmp_path / "resumed")
    assert [b[s] for s in (4, 5, 6)] == [a[s] for s in (4, 5, 6)]
    wa, wb = weights(full), weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with open(tmp_path / "full" / "metrics.csv") as f:
        assert all(float(r["train/real_fraction"]) == 0.25 for r in csv.DictReader(f))  # 2 of 8, every step


def test_seeds_in_one_process_equal_the_runs_trained_alone(base, tmp_path):
    together = train_seeds(replace(base, out=str(tmp_path / "together"), seeds=[0, 1]), REAL, SIM)
    assert together == [tmp_path / "together" / f"seed_{s}" / "ckpt" / "step_6" for s in (0, 1)]
    alone = [train(replace(base, out=str(tmp_path / f"alone{s}"), seed=s), REAL, SIM) for s in (0, 1)]
    for t, a in zip(together, alone):
        wt, wa = weights(t), weights(a)
        assert all(torch.equal(wt[k], wa[k]) for k in wt)
    w0, w1 = weights(together[0]), weights(together[1])
    assert not torch.equal(w0["state_in.weight"], w1["state_in.weight"])  # two seeds, two different runs


def test_seeds_need_the_fast_path_and_distinct_seeds(base):
    with pytest.raises(ValueError, match="set fast=true"):
        replace(base, fast=False, seeds=[0, 1])
    with pytest.raises(ValueError, match="distinct seeds"):
        replace(base, seeds=[1, 1])
    with pytest.raises(ValueError, match="call train_seeds"):
        train(replace(base, seeds=[0, 1]), REAL, SIM)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
def test_cuda_graph_replays_equal_eager_steps(base, tmp_path):
    """Steps 4-6 are graph replays (3 eager warm-up steps first); the same run with every step eager (warmup=steps)
    must give the same losses and weights."""
    import cotrain.graphed_step as gs

    cuda = replace(base, device="cuda", steps=8, save_every=8)
    graphed = train(replace(cuda, out=str(tmp_path / "graphed")), REAL, SIM)
    default = gs.GraphedStep.__init__.__kwdefaults__["warmup"]
    gs.GraphedStep.__init__.__kwdefaults__["warmup"] = 100
    try:
        eager = train(replace(cuda, out=str(tmp_path / "eager")), REAL, SIM)
    finally:
        gs.GraphedStep.__init__.__kwdefaults__["warmup"] = default
    a, b = losses(tmp_path / "graphed"), losses(tmp_path / "eager")
    assert [a[s] for s in range(1, 9)] == pytest.approx([b[s] for s in range(1, 9)], rel=1e-5)
    wa, wb = weights(graphed), weights(eager)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
