"""Training-time image augmentation (random shift): hand values, and that only `sft_loss` in training mode sees it."""

from __future__ import annotations

import pytest
import torch
from test_policies_support import HEADS, TINY_SPEC, obs_of, stats_of, synthetic_batch, tiny_config

from cotrain.data.spec import IMAGE_KEY
from cotrain.policies import make_policy
from cotrain.policies.augment import random_shift, shift_images
from cotrain.policies.configuration_vla import SmallVLAConfig


def test_shift_hand_values_replicate_the_border():
    image = torch.arange(9, dtype=torch.uint8).view(1, 3, 3, 1)  # [[0 1 2] [3 4 5] [6 7 8]]
    # (dy, dx) = (1, -1): out[i, j] = image[min(i + 1, 2), max(j - 1, 0)]
    out = shift_images(image, torch.tensor([[1, -1]]))
    assert out[0, :, :, 0].tolist() == [[3, 3, 4], [6, 6, 7], [6, 6, 7]]
    assert torch.equal(shift_images(image, torch.tensor([[0, 0]])), image)


def test_random_shift_draws_a_shift_per_image_within_the_bound():
    g = torch.Generator().manual_seed(0)
    image = torch.arange(16 * 16, dtype=torch.int32).view(1, 16, 16, 1).repeat(64, 1, 1, 1)
    out = random_shift(image, 2, generator=g)
    # the centre pixel (8, 8) = 136 moves to 8·16 + 8 + 16·dy + dx with |dy|, |dx| <= 2
    delta = out[:, 8, 8, 0] - 136
    dy, dx = torch.div(delta + 2, 16, rounding_mode="floor"), (delta + 2) % 16 - 2
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 10  # 25 possible shifts, 64 draws: many distinct ones
    assert torch.equal(random_shift(image, 0), image)
    with pytest.raises(ValueError, match="max_shift must be >= 0"):
        random_shift(image, -1)


def _encoder_inputs(policy) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    policy.image_encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    return seen


def _textured_batch(n: int = 6) -> dict:
    batch = synthetic_batch(n=n)
    g = torch.Generator().manual_seed(1)  # solid colours are shift-invariant: give the images texture
    batch[IMAGE_KEY] = torch.randint(0, 256, batch[IMAGE_KEY].shape, generator=g, dtype=torch.uint8)
    return batch


def test_sft_loss_shifts_images_only_in_training_mode_and_sampling_never_does():
    torch.manual_seed(0)
    batch = _textured_batch()
    cfg = tiny_config(HEADS["flow_sde"])
    policy = make_policy(SmallVLAConfig(**{**cfg.__dict__, "image_shift": 4}), TINY_SPEC, stats_of(batch))
    seen = _encoder_inputs(policy)
    policy.train()
    policy.sft_loss(batch)
    shifted = seen[-1]
    changed = [not torch.equal(shifted[i], batch[IMAGE_KEY][i]) for i in range(len(shifted))]
    assert sum(changed) >= 4  # P(no shift) = 1/81 per image
    policy.sample(obs_of(batch), explore=True)
    policy.sample(obs_of(batch), explore=False)
    _, aux = policy.sample(obs_of(batch), explore=True)[2:]
    policy.evaluate(obs_of(batch), aux)
    assert all(torch.equal(x, batch[IMAGE_KEY]) for x in seen[1:])  # sample / evaluate: never shifted
    policy.eval()
    policy.sft_loss(batch)
    assert torch.equal(seen[-1], batch[IMAGE_KEY])  # eval mode (validation losses): not shifted


def test_image_shift_zero_turns_augmentation_off_and_negative_is_refused():
    batch = _textured_batch()
    cfg = tiny_config(HEADS["token"])
    policy = make_policy(SmallVLAConfig(**{**cfg.__dict__, "image_shift": 0}), TINY_SPEC, stats_of(batch)).train()
    seen = _encoder_inputs(policy)
    policy.sft_loss(batch)
    assert torch.equal(seen[-1], batch[IMAGE_KEY])
    with pytest.raises(ValueError, match="image_shift must be >= 0, got -1"):
        SmallVLAConfig(image_shift=-1)


def test_state_noise_jitters_the_normalised_state_only_in_training_sft_loss():
    torch.manual_seed(0)
    batch = _textured_batch(n=256)
    cfg = tiny_config(HEADS["flow_sde"])
    policy = make_policy(SmallVLAConfig(**{**cfg.__dict__, "state_noise": 0.3}), TINY_SPEC, stats_of(batch))
    seen: list[torch.Tensor] = []
    policy.state_in.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    clean = policy.normalizer.normalize_state(batch["observation.state"].float())
    policy.train()
    policy.sft_loss(batch)
    jitter = seen[-1] - clean
    assert abs(jitter.std().item() - 0.3) < 0.02 and abs(jitter.mean().item()) < 0.02  # 256·S draws of N(0, 0.3²)
    policy.sample(obs_of(batch), explore=True)
    assert torch.allclose(seen[-1], clean)  # sampling never jitters
    policy.eval()
    policy.sft_loss(batch)
    assert torch.allclose(seen[-1], clean)  # nor a validation loss
    with pytest.raises(ValueError, match="state_noise must be >= 0, got -0.1"):
        SmallVLAConfig(state_noise=-0.1)
