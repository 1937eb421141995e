"""The image encoder's residual stages (`cnn_blocks`): identity when their body is zero, same token grid, trained."""

import dataclasses

import pytest
import torch
from test_policies_support import (
    HEADS,
    TINY_SPEC,
    gradient_and_finite_difference,
    obs_of,
    stats_of,
    synthetic_batch,
    tiny_config,
)

from cotrain.policies import make_policy
from cotrain.policies.blocks import ImageEncoder, ResidualConv


def test_a_residual_block_with_a_zero_body_is_gelu_of_its_input():
    block = ResidualConv(8)
    last_norm = block.body[-1]
    torch.nn.init.zeros_(last_norm.weight)  # GroupNorm's affine scale 0 and shift 0: the body outputs exactly 0
    torch.nn.init.zeros_(last_norm.bias)
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(block(x), torch.nn.functional.gelu(x))


def test_blocks_deepen_each_stage_at_the_same_grid():
    image = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    plain, deep = ImageEncoder(4, (8, 16), 32), ImageEncoder(4, (8, 16), 32, blocks=2)
    assert plain(image).shape == deep(image).shape == (2, 16, 32)  # (32/4/2)² tokens
    n_blocks = sum(isinstance(m, ResidualConv) for m in deep.modules())
    assert n_blocks == 4  # 2 per stage, 2 stages
    extra = sum(p.numel() for p in deep.parameters()) - sum(p.numel() for p in plain.parameters())
    per_block = lambda c: 2 * (9 * c * c + c) + 2 * 2 * c  # noqa: E731  two 3×3 convs (+bias), two GroupNorms
    assert extra == 2 * per_block(8) + 2 * per_block(16)


def test_policy_with_blocks_trains_its_blocks():
    """One block per stage keeps the token grid; each block's first conv gets the SFT loss's true derivative
    (central finite difference along its gradient, same noise draws, agrees within 2 %)."""
    torch.manual_seed(0)
    batch = synthetic_batch(n=4)
    cfg = dataclasses.replace(tiny_config(HEADS["flow_sde"]), cnn_blocks=1)
    policy = make_policy(cfg, TINY_SPEC, stats_of(batch))
    plain = make_policy(tiny_config(HEADS["flow_sde"]), TINY_SPEC, stats_of(batch))
    assert policy.encode(obs_of(batch)).tokens.shape == plain.encode(obs_of(batch)).tokens.shape
    blocks = [m for m in policy.image_encoder.modules() if isinstance(m, ResidualConv)]
    assert len(blocks) == 2  # one per stage of cnn_channels=(16, 32)
    for block in blocks:
        grad_norm, finite_difference = gradient_and_finite_difference(policy, batch, block.body[0].weight)
        assert grad_norm > 0.1  # measured 0.98 and 1.18
        assert finite_difference == pytest.approx(grad_norm, rel=0.02)
