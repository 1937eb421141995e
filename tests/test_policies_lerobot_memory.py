"""Memory options of the LeRobot π0.5 adapter on the tiny build (CPU, random weights): the unused `lm_head`s are not
kept, gradient checkpointing recomputes layers without changing a value or a gradient (evaluate included), and a
frozen vision tower gets no gradient."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("transformers", reason="LeRobot's π0 / π0.5 need lerobot[pi] (transformers)")

from test_policies_support import TINY_SPEC, obs_of, stats_of, synthetic_batch  # noqa: E402

from cotrain.policies import lerobot_adapter, make_policy  # noqa: E402
from cotrain.policies.configuration_lerobot import LeRobotVLAConfig  # noqa: E402
from cotrain.policies.lerobot_adapter import TINY  # noqa: E402

CFG = LeRobotVLAConfig(size="tiny", image_size=32, tokenizer="bytes", max_text_tokens=160)
BATCH = synthetic_batch(n=3)


def build(cfg: LeRobotVLAConfig = CFG, seed: int = 0):
    torch.manual_seed(seed)
    return make_policy(cfg, TINY_SPEC, stats_of(BATCH))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_all(policy) -> dict[str, torch.Tensor]:
    """sft_loss, sample (explore) and evaluate of its chain, each after seeding the global RNG."""
    torch.manual_seed(1)
    loss = policy.sft_loss(BATCH)
    torch.manual_seed(2)
    actions, logprob, value, aux = policy.sample(obs_of(BATCH), explore=True)
    torch.manual_seed(3)
    new_logprob, entropy, new_value = policy.evaluate(obs_of(BATCH), aux)
    return {"loss": loss, "actions": actions, "logprob": logprob, "value": value, "new_logprob": new_logprob,
            "entropy": entropy, "new_value": new_value}


def test_output_layers_are_not_kept_and_nothing_else_changes(monkeypatch):
    lean = build()
    monkeypatch.setattr(lerobot_adapter, "_drop_output_layers", lambda model: None)
    full = build()
    # two vocabulary projections: 512 tokens × 64 (VLM width) + 512 × 32 (expert width) = 49,152 parameters
    assert n_params(full) - n_params(lean) == TINY["vocab"] * (TINY["width"] + TINY["expert_width"]) == 49_152
    assert not any("lm_head" in name for name, _ in lean.named_parameters())
    kept = dict(full.named_parameters())
    assert all(torch.equal(p, kept[name]) for name, p in lean.named_parameters())
    for key, value in run_all(lean).items():
        assert torch.equal(value, run_all(full)[key]), key


def grads_after(policy, loss_fn) -> dict[str, torch.Tensor]:
    policy.zero_grad(set_to_none=True)
    loss_fn(policy).backward()
    return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


def evaluate_loss(policy) -> torch.Tensor:
    """A PPO-like objective of evaluate's three outputs on a chain sampled under a fixed seed."""
    torch.manual_seed(2)
    _, _, _, aux = policy.sample(obs_of(BATCH), explore=True)
    torch.manual_seed(3)
    logprob, entropy, value = policy.evaluate(obs_of(BATCH), aux)
    return logprob.sum() + 0.1 * entropy.sum() + value.square().sum()


def sft(policy) -> torch.Tensor:
    torch.manual_seed(1)
    return policy.sft_loss(BATCH)


def count_calls(module: torch.nn.Module) -> list[int]:
    """Calls counted on entry (a recompute in backward may stop early inside the module, before it returns)."""
    calls = [0]
    module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("loss_fn", [sft, evaluate_loss], ids=["sft_loss", "evaluate"])
def test_gradient_checkpointing_recomputes_layers_with_equal_values_and_gradients(loss_fn):
    plain, ckpt = build(), build(dataclasses.replace(CFG, gradient_checkpointing=True))
    plain.train(), ckpt.train()
    layer_calls = {}
    for name, policy in (("plain", plain), ("ckpt", ckpt)):
        calls = count_calls(policy.model.paligemma_with_expert.paligemma.model.language_model.layers[0].mlp)
        loss = loss_fn(policy)
        forward_calls = calls[0]
        loss.backward()
        layer_calls[name] = (forward_calls, calls[0] - forward_calls)  # (in forward, in backward)
    # forward: sft_loss runs the first VLM layer once, evaluate_loss twice (sample's prefix + evaluate's); backward:
    # checkpointed, it runs once more (once: LeRobot's own nesting would run it twice)
    assert layer_calls["plain"][1] == 0 and layer_calls["ckpt"] == (layer_calls["plain"][0], 1)
    g_plain, g_ckpt = grads_after(plain, loss_fn), grads_after(ckpt, loss_fn)
    assert g_plain.keys() == g_ckpt.keys() and len(g_plain) > 20
    for name, g in g_plain.items():
        torch.testing.assert_close(g_ckpt[name], g, rtol=1e-5, atol=1e-7, msg=name)
    assert torch.equal(loss_fn(plain), loss_fn(ckpt))


def test_evaluate_with_checkpointing_reproduces_the_sampled_logprobs():
    policy = build(dataclasses.replace(CFG, gradient_checkpointing=True))
    policy.train()
    torch.manual_seed(2)
    _, logprob, value, aux = policy.sample(obs_of(BATCH), explore=True)
    new_logprob, _, new_value = policy.evaluate(obs_of(BATCH), aux)
    torch.testing.assert_close(new_logprob, logprob, rtol=0, atol=1e-5)
    torch.testing.assert_close(new_value, value, rtol=0, atol=1e-6)


def test_frozen_vision_tower_gets_no_gradient_and_the_rest_trains():
    policy = build(dataclasses.replace(CFG, freeze_vision_tower=True))
    policy.train()
    sft(policy).backward()
    vision = "model.paligemma_with_expert.paligemma.model.vision_tower."
    named = dict(policy.named_parameters())
    frozen = {n for n, p in named.items() if not p.requires_grad}
    assert frozen == {n for n in named if n.startswith(vision)} and frozen
    assert all(named[n].grad is None for n in frozen)
    for trained in ("model.paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight",
                    "model.paligemma_with_expert.paligemma.model.language_model.layers.0.mlp.up_proj.weight",
                    "model.paligemma_with_expert.gemma_expert.model.layers.0.mlp.up_proj.weight",
                    "model.action_out_proj.weight"):
        assert named[trained].grad is not None and named[trained].grad.abs().sum() > 0, trained


def test_ppo_update_with_checkpointing_and_micro_batches_runs_from_ratio_one():
    """Stage II's update (evaluate + PPO loss + β·SFT anchor, two micro-batches per minibatch) on the tiny π0.5 with
    gradient checkpointing: the path LeRobot's own checkpointing breaks."""
    from cotrain.rl import PPOTrainer, RealBatchStream, RLConfig, RolloutCollector
    from doubles.rl_toys import ToyVecEnv
    from test_policies_support import TASKS

    demos = synthetic_batch(n=8)
    real = [{k: v[i] for k, v in demos.items()} for i in range(8)]
    policy = build(dataclasses.replace(CFG, gradient_checkpointing=True))
    cfg = RLConfig(num_steps=2, lr=1e-4, value_lr=1e-3, real_batch_size=2, num_minibatches=1, micro_batches=2,
                   update_epochs=1)
    env = ToyVecEnv(2, CFG.chunk_size, max_steps=8, image_shape=(TINY_SPEC.image_height, TINY_SPEC.image_width, 3),
                    task=TASKS[0])
    trainer = PPOTrainer(policy, cfg, RealBatchStream(real, cfg.real_batch_size, seed=0))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    metrics = trainer.update(RolloutCollector(env, policy, cfg).collect(trainer.iteration)[0])
    assert metrics["initial_ratio_dev"] < 1e-5  # evaluate re-scores what sample drew
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    changed = {k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("value_head.") for k in changed)
    assert any(".language_model.layers.0." in k for k in changed)  # the checkpointed prefix layers trained


def test_a_deep_copy_checkpoints_by_its_own_training_flag():
    """The image embedding is checkpointed (recomputed in backward) in training mode only, by each copy's own mode."""
    import copy

    policy = build(dataclasses.replace(CFG, gradient_checkpointing=True))
    twin = copy.deepcopy(policy)
    policy.eval()
    twin.train()
    recomputed = {}
    for name, p in (("original", policy), ("twin", twin)):
        calls = count_calls(p.model.paligemma_with_expert.paligemma.model.multi_modal_projector)
        loss = sft(p)
        forward_calls = calls[0]
        loss.backward()
        recomputed[name] = calls[0] - forward_calls
    assert recomputed == {"original": 0, "twin": 1}
