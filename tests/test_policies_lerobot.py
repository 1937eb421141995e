"""The LeRobot π0.5 adapter, built tiny through LeRobot's / transformers' own config objects (random weights,
CPU): forward, SFT loss, the PPO ratio and a checkpoint round trip through the same Policy interface."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="LeRobot's π0 / π0.5 need lerobot[pi] (transformers)")

from test_policies_support import (  # noqa: E402
    TINY_SPEC,
    gradient_and_finite_difference,
    obs_of,
    stats_of,
    synthetic_batch,
)

from cotrain.policies import load_policy, make_policy, policy_config_from_dict, save_checkpoint  # noqa: E402
from cotrain.policies.configuration_lerobot import LeRobotVLAConfig  # noqa: E402
from cotrain.policies.configuration_vla import FlowHeadConfig  # noqa: E402


def _tiny(method: str = "flow_sde") -> LeRobotVLAConfig:
    return LeRobotVLAConfig(size="tiny", image_size=32, tokenizer="bytes", max_text_tokens=160,
                            head=FlowHeadConfig(rl_method=method))


@pytest.fixture(scope="module")
def tiny_pi05():
    torch.manual_seed(0)
    batch = synthetic_batch(n=2)
    return make_policy(_tiny(), TINY_SPEC, stats_of(batch)), batch


def test_tiny_pi05_samples_scores_and_trains(tiny_pi05):
    policy, batch = tiny_pi05
    actions, logprob, value, aux = policy.sample(obs_of(batch), explore=True)
    assert actions.shape == (2, 4, 7) and logprob.shape == (2,) and value.shape == (2,)
    assert aux["chain"].shape == (2, 5, 4, 32)  # LeRobot pads actions to 32 dims; the chain lives there
    new_logprob, entropy, _ = policy.evaluate(obs_of(batch), aux)
    assert torch.equal(new_logprob, logprob)  # PPO ratio exactly 1
    # the SFT loss's gradient on the action output is its true derivative (finite difference along it, same draws)
    grad_norm, finite_difference = gradient_and_finite_difference(policy, batch, policy.model.action_out_proj.weight)
    assert grad_norm > 1e-3
    assert finite_difference == pytest.approx(grad_norm, rel=0.02)


def test_tiny_pi05_checkpoint_round_trip(tmp_path, tiny_pi05):
    policy, batch = tiny_pi05
    save_checkpoint(tmp_path / "ckpt", policy)
    loaded = load_policy(tmp_path / "ckpt", expected_spec=TINY_SPEC)
    a1 = policy.sample(obs_of(batch), explore=False)[0]
    a2 = loaded.sample(obs_of(batch), explore=False)[0]
    assert torch.equal(a1, a2)


def test_config_rules():
    cfg = policy_config_from_dict({"type": "lerobot_vla", "size": "tiny", "tokenizer": "bytes"})
    assert isinstance(cfg, LeRobotVLAConfig)
    with pytest.raises(ValueError, match="pretrained_path needs size='full'"):
        LeRobotVLAConfig(size="tiny", pretrained_path="/x")
    with pytest.raises(ValueError, match="head.n_layers is not used"):
        LeRobotVLAConfig(head=FlowHeadConfig(n_layers=3))
    with pytest.raises(ValueError, match="tokenizer_dir is the PaliGemma tokenizer's directory; it needs tokenizer='paligemma'"):
        LeRobotVLAConfig(tokenizer="bytes", tokenizer_dir="/x")
    cfg = policy_config_from_dict({"type": "lerobot_vla", "gradient_checkpointing": True, "freeze_vision_tower": True,
                                   "tokenizer_dir": "/tok"})
    assert (cfg.gradient_checkpointing, cfg.freeze_vision_tower, cfg.tokenizer_dir) == (True, True, "/tok")
