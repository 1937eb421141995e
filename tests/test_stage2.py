"""Stage II end to end on a tiny budget: rollouts in the twin, PPO + anchor, eval in both domains, exact resume."""

import csv

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cotrain.data import DatasetWriter, FeatureSpec, Provenance, store_from_episodes
from cotrain.metrics import WandbConfig
from cotrain.policies import make_policy, policy_config_from_dict, save_checkpoint
from cotrain.rl import RLConfig
from cotrain.stage2 import Stage2Config, train

pytestmark = pytest.mark.sapien
SPEC = FeatureSpec()
TINY = {"type": "small_vla", "chunk_size": 4, "d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_ratio": 2,
        "cnn_channels": [8, 16], "value_hidden": 16, "head": {"type": "flow", "num_steps": 2, "n_layers": 1}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random Stage I-like checkpoint and a small real dataset (the anchor's)."""
    from cotrain.envs import load_task_config

    root = tmp_path_factory.mktemp("s2")
    rng = np.random.default_rng(0)
    with DatasetWriter(root / "real", SPEC, commit_every=2) as w:
        for ep in range(2):
            for t in range(6):
                w.add_frame(np.full((128, 128, 3), 20 * t, np.uint8), rng.standard_normal(8),
                            rng.uniform(-0.05, 0.05, 7), "put the red cube in the tray")
            w.save_episode(Provenance("real_proxy", "teleop", ep))
    store = store_from_episodes([[{"image": np.zeros((128, 128, 3), np.uint8), "state": rng.standard_normal(8),
                                   "action": rng.uniform(-0.05, 0.05, 7), "task": "x"} for _ in range(4)]])
    stats = {"observation.state": {"mean": store.state.mean(0), "std": np.ones(8), "min": store.state.min(0),
                                   "max": store.state.max(0)},
             "action": {"mean": np.zeros(7), "std": np.ones(7), "min": -0.05 * np.ones(7), "max": 0.05 * np.ones(7)}}
    torch.manual_seed(0)
    policy = make_policy(policy_config_from_dict(dict(TINY)), SPEC, stats)
    save_checkpoint(root / "init", policy)
    task = load_task_config("pick_place")
    return root, task


def config(setup, out, **kw):
    import dataclasses

    root, task = setup
    task_dict = dataclasses.asdict(task)
    task_dict.pop("source")
    task_dict["max_episode_steps"] = 8  # two chunks per episode keeps CPU rendering affordable
    base = dict(init=str(root / "init"), task=task_dict, real=[str(root / "real")],
                rl=RLConfig(num_steps=2, num_minibatches=1, update_epochs=1, real_batch_size=4, beta=0.2, lr=1e-4),
                wandb=WandbConfig(mode="disabled"), envs=1, backend="physx_cpu_serial", iterations=2, eval_every=2,
                eval_episodes=1, save_every=1, out=str(out), device="cpu", seed=0)
    base.update(kw)
    return Stage2Config(**base)


def rows(out):
    with open(out / "metrics.csv") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_stage2_runs_and_resumes_exactly(setup, tmp_path):
    full = tmp_path / "full"
    assert train(config(setup, full)) == full / "ckpt" / "step_2"
    m = rows(full)
    # evaluation before training and after the last iteration, in both domains, over the evaluated seeds
    assert {"eval/sim_success", "eval/real_proxy_success"} <= set(m[0]) and "eval/real_proxy_success" in m[2]
    # evaluate() re-scores sample(): exact for the same batch (tests/test_rl_vla.py); here the minibatch groups rows
    # differently from the rollout, and CPU kernels round differently per batch size
    assert float(m[1]["train/initial_ratio_dev"]) < 1e-4
    assert float(m[1]["train/sft_loss"]) > 0 and float(m[2]["env_steps"]) == 2 * 2 * 4
    assert (full / "ckpt" / "LATEST").read_text() == "step_2\n" and (full / "success.png").exists()
    w0 = load_file(str(setup[0] / "init" / "model.safetensors"))
    w2 = load_file(str(full / "ckpt" / "step_2" / "model.safetensors"))
    assert any(not torch.equal(w0[k], w2[k]) for k in w0), "PPO + anchor must change the weights"

    # a call with no time left stops after one iteration with a checkpoint; the same command resumed goes on, and
    # iteration 2 matches the uninterrupted run
    part = tmp_path / "part"
    assert train(config(setup, part, time_budget_s=0.0)) == part / "ckpt" / "step_1"
    assert (part / "ckpt" / "LATEST").read_text() == "step_1\n" and 2 not in rows(part)
    # the same policy on the same seeds: the same evaluation outcome
    assert rows(part)[0]["eval/sim_success"] == m[0]["eval/sim_success"]
    train(config(setup, part, resume=str(part), eval_episodes=0))
    a, b = rows(full)[2], rows(part)[2]
    for key in ("train/pg_loss", "train/v_loss", "train/sft_loss"):
        assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), key
    wa = load_file(str(full / "ckpt" / "step_2" / "model.safetensors"))
    wb = load_file(str(part / "ckpt" / "step_2" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_beta_without_real_data_is_refused(setup, tmp_path):
    with pytest.raises(ValueError, match=r"rl.beta=0.2 > 0 needs real="):
        train(config(setup, tmp_path, real=[]))


def test_the_training_domain_must_be_a_twin_domain_of_the_task(setup, tmp_path):
    with pytest.raises(ValueError, match=r"domain=real_proxy trains in the real world's stand-in"):
        config(setup, tmp_path, domain="real_proxy")
    with pytest.raises(ValueError, match=r"domain='twin' is not a domain of task 'pick_place' \(known: \['real_proxy', 'sim'\]\)"):
        config(setup, tmp_path, domain="twin")
    assert config(setup, tmp_path).eval_domains == ("sim", "real_proxy")


def test_stage2_trains_and_evaluates_in_a_calibrated_twin_domain(setup, tmp_path):
    """A task config with a `twin` domain (what cotrain.calibrate writes): rollouts and evaluation use it."""
    task = dict(config(setup, tmp_path / "run").task)
    task["domains"] = {**task["domains"], "twin": task["domains"]["sim"]}
    train(config(setup, tmp_path / "run", domain="twin", iterations=1, eval_every=1, task=task))
    evals = [r for r in rows(tmp_path / "run").values() if r.get("eval/real_proxy_success")]
    assert evals and all(r.get("eval/twin_success") not in (None, "") and "eval/sim_success" not in r for r in evals)
