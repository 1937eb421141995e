"""Checkpoint directories: identical actions after a round trip, exact resume, spec refusal, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
from test_policies_support import HEADS, TINY_SPEC, obs_of, stats_of, synthetic_batch, tiny_config

from cotrain.data.spec import FeatureSpec, SpecMismatchError
from cotrain.policies import load_policy, load_training_state, make_policy, save_checkpoint
from cotrain.policies.checkpoint import CONFIG_FILE, MODEL_FILE, SPEC_FILE, TRAINING_FILE


def _trained(head: str, steps: int = 3):
    torch.manual_seed(0)
    batch = synthetic_batch(n=4)
    policy = make_policy(tiny_config(HEADS[head]), TINY_SPEC, stats_of(batch))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = policy.sft_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy, opt, batch


@pytest.mark.parametrize("head", sorted(HEADS))
def test_saved_and_loaded_policy_gives_identical_actions(tmp_path, head):
    policy, _, batch = _trained(head)
    save_checkpoint(tmp_path / "ckpt", policy)
    loaded = load_policy(tmp_path / "ckpt", expected_spec=TINY_SPEC)
    assert type(loaded) is type(policy) and loaded.config == policy.config
    obs = obs_of(batch)
    for explore in (False, True):
        torch.manual_seed(7)
        a1, lp1, v1, _ = policy.sample(obs, explore)
        torch.manual_seed(7)
        a2, lp2, v2, _ = loaded.sample(obs, explore)
        assert torch.equal(a1, a2) and torch.equal(v1, v2)
        assert torch.equal(lp1, lp2) or (torch.isnan(lp1).all() and torch.isnan(lp2).all())
    for key, stats in policy.norm_stats().items():
        for name, value in stats.items():
            assert torch.equal(loaded.norm_stats()[key][name], value)


def test_mismatched_feature_spec_is_refused(tmp_path):
    policy, _, _ = _trained("token", steps=0)
    save_checkpoint(tmp_path / "ckpt", policy)
    robot = FeatureSpec(image_height=32, image_width=32, action_dim=6, fps=15)
    with pytest.raises(SpecMismatchError, match=r"ckpt: feature spec does not match \(action_dim: expected 6, got 7; "
                                                r"fps: expected 15, got 10\)"):
        load_policy(tmp_path / "ckpt", expected_spec=robot)


def test_resume_continues_exactly(tmp_path):
    """Train 3 steps, checkpoint, train 1 more; a fresh process-like restart from the checkpoint gets the same
    loss and weights at step 4 (weights, optimizer moments and the RNG that draws the flow noise all restored)."""
    policy, opt, batch = _trained("flow_sde", steps=3)
    save_checkpoint(tmp_path / "ckpt", policy, optimizer=opt, step=3, extra={"sampler": {"epoch": 1, "order": [3, 1]}})
    loss_4 = policy.sft_loss(batch)
    opt.zero_grad()
    loss_4.backward()
    opt.step()

    torch.manual_seed(999)  # a restarted process has some other RNG state
    resumed = load_policy(tmp_path / "ckpt")
    opt2 = torch.optim.AdamW(resumed.parameters(), lr=1e-3)
    state = load_training_state(tmp_path / "ckpt", optimizer=opt2)
    assert state.step == 3 and state.extra == {"sampler": {"epoch": 1, "order": [3, 1]}}
    loss_4b = resumed.sft_loss(batch)
    opt2.zero_grad()
    loss_4b.backward()
    opt2.step()
    assert loss_4b.item() == loss_4.item()
    for (name, p1), p2 in zip(policy.named_parameters(), resumed.parameters()):
        assert torch.equal(p1, p2), name


def test_checkpoint_files_and_atomic_overwrite(tmp_path):
    policy, opt, _ = _trained("token", steps=0)
    save_checkpoint(tmp_path / "ckpt", policy, optimizer=opt, step=1)
    save_checkpoint(tmp_path / "ckpt", policy, step=2)  # replaces the directory as a whole
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert {MODEL_FILE, CONFIG_FILE, SPEC_FILE, TRAINING_FILE} <= set(names)
    assert json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())["step"] == 2
    assert json.loads((tmp_path / "ckpt" / SPEC_FILE).read_text()) == TINY_SPEC.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old directories left
    with pytest.raises(ValueError, match="no optimizer state"):
        load_training_state(tmp_path / "ckpt", optimizer=opt)


def test_failed_save_leaves_the_previous_checkpoint(tmp_path):
    policy, _, _ = _trained("token", steps=0)
    save_checkpoint(tmp_path / "ckpt", policy, step=1)
    with pytest.raises(TypeError, match=r"extra\['bad'\] is a object"):
        save_checkpoint(tmp_path / "ckpt", policy, step=2, extra={"bad": object()})
    assert json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_incomplete_checkpoint_is_refused(tmp_path):
    policy, _, _ = _trained("token", steps=0)
    save_checkpoint(tmp_path / "ckpt", policy)
    (tmp_path / "ckpt" / MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['model.safetensors'\]"):
        load_policy(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_policy(tmp_path / "nope")


def test_overrides_change_the_config_keep_the_weights_and_are_checked(tmp_path):
    policy, _, _ = _trained("flow_sde")
    save_checkpoint(tmp_path / "ckpt", policy)
    loaded = load_policy(tmp_path / "ckpt", overrides={"value_detach": True, "head": {"rl_method": "flow_noise"}})
    assert loaded.config.value_detach and loaded.config.head.rl_method == "flow_noise"
    assert loaded.config.head.num_steps == policy.config.head.num_steps  # a nested override merges, not replaces
    for (name, a), (_, b) in zip(policy.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match=r"overrides: unknown key\(s\) \['value_detached'\]"):
        load_policy(tmp_path / "ckpt", overrides={"value_detached": True})


def test_run_layout_latest_pointer_resolves_from_the_run_its_ckpt_dir_or_the_step_itself(tmp_path):
    from cotrain import checkpoints

    policy, _, _ = _trained("token", steps=0)
    run = tmp_path / "run"
    assert checkpoints.latest(run) is None  # nothing saved yet
    for step in (3, 6):
        save_checkpoint(checkpoints.step_dir(run, step), policy, step=step)
    assert checkpoints.mark_latest(run, 3) == run / "ckpt" / "step_3"
    assert (run / "ckpt" / "LATEST").read_text() == "step_3\n"
    assert checkpoints.latest(run) == run / "ckpt" / "step_3"
    assert checkpoints.resolve(run) == checkpoints.resolve(run / "ckpt") == run / "ckpt" / "step_3"
    checkpoints.mark_latest(run, 6)
    assert checkpoints.resolve(run) == run / "ckpt" / "step_6"
    assert checkpoints.resolve(run / "ckpt" / "step_3") == run / "ckpt" / "step_3"  # a checkpoint itself: any layout
    assert checkpoints.step_of(run / "ckpt" / "step_6") == 6
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["LATEST", "step_3", "step_6"]  # no temporary left


def test_run_layout_missing_pointer_or_checkpoint_is_one_clear_error(tmp_path):
    from cotrain import checkpoints

    policy, _, _ = _trained("token", steps=0)
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match=r"resume=.*nope: no such checkpoint or run directory"):
        checkpoints.resolve(tmp_path / "nope", "resume")
    (run / "ckpt").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"init=.*run: neither a checkpoint directory .* nor a run with ckpt/LATEST"):
        checkpoints.resolve(run, "init")
    with pytest.raises(FileNotFoundError, match=r"step_2: no model.safetensors; LATEST may only name a complete"):
        checkpoints.mark_latest(run, 2)
    save_checkpoint(checkpoints.step_dir(run, 2), policy, step=2)
    checkpoints.mark_latest(run, 2)
    (run / "ckpt" / "step_2" / MODEL_FILE).unlink()  # the checkpoint LATEST names went away
    with pytest.raises(FileNotFoundError, match=r"LATEST names 'step_2', which is not a complete checkpoint"):
        checkpoints.resolve(run)
    with pytest.raises(ValueError, match="expected a directory named step_<N>"):
        checkpoints.step_of(tmp_path / "last")
