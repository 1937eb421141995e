"""Spatial-softmax keypoints: hand-worked coordinates, and the policy built with keypoint tokens."""

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
from torch import nn

from cotrain.policies import make_policy
from cotrain.policies.blocks import SpatialSoftmax


def peaked_keypoints(features):
    ss = SpatialSoftmax(channels=features.shape[1], keypoints=features.shape[1], d_model=8)
    ss.maps = nn.Identity()  # the feature map itself is the keypoint's logit map
    return ss.coordinates(features)


def test_a_single_hot_cell_is_its_centre():
    f = torch.zeros(1, 1, 8, 8)
    f[0, 0, 2, 5] = 100.0  # row 2, column 5 of an 8x8 grid; cell centres at -1 + 2i/7
    xy = peaked_keypoints(f)
    assert xy[0, 0].tolist() == pytest.approx([-1 + 10 / 7, -1 + 4 / 7], abs=1e-5)


def test_two_equal_cells_give_their_midpoint_and_keypoints_are_independent():
    f = torch.zeros(1, 2, 4, 4)
    f[0, 0, 0, 0] = f[0, 0, 3, 3] = 100.0  # opposite corners → centre (0, 0)
    f[0, 1, 3, 0] = 100.0  # bottom-left corner → (-1, 1)
    xy = peaked_keypoints(f)
    assert xy[0, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-5)
    assert xy[0, 1].tolist() == pytest.approx([-1.0, 1.0], abs=1e-5)


def test_a_one_pixel_shift_moves_the_keypoint_token():
    torch.manual_seed(0)
    ss = SpatialSoftmax(channels=1, keypoints=1, d_model=16)
    ss.maps = nn.Identity()
    a, b = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    a[0, 0, 7, 7] = b[0, 0, 7, 8] = 100.0
    ta, tb = ss(a), ss(b)
    assert ta.shape == (1, 1, 16)
    assert (ta - tb).norm() > 0.05 * ta.norm()


def test_policy_with_keypoints_has_one_token_per_keypoint_and_trains_their_temperature():
    """6 keypoints add exactly 6 context tokens; the SFT loss reaches the keypoint temperature: its gradient is the
    loss's derivative (central finite difference along it, same noise draws), so training moves the keypoints."""
    torch.manual_seed(0)
    batch = synthetic_batch(n=4)
    cfg = dataclasses.replace(tiny_config(HEADS["flow_sde"]), keypoints=6)
    policy = make_policy(cfg, TINY_SPEC, stats_of(batch))
    ctx = policy.encode(obs_of(batch))
    plain = make_policy(tiny_config(HEADS["flow_sde"]), TINY_SPEC, stats_of(batch)).encode(obs_of(batch))
    assert ctx.tokens.shape[1] == plain.tokens.shape[1] + 6
    grad_norm, finite_difference = gradient_and_finite_difference(
        policy, batch, policy.image_encoder.keypoints.log_temperature)
    assert grad_norm > 1e-3  # measured 0.012
    assert finite_difference == pytest.approx(grad_norm, rel=0.03)
    actions, logprob, value, _ = policy.sample(obs_of(batch), explore=True)
    assert actions.shape == (4, 4, 7) and torch.isfinite(logprob).all()


def test_keypoint_coordinates_are_those_the_tokens_are_made_from():
    from cotrain.policies.blocks import ImageEncoder

    torch.manual_seed(0)
    enc = ImageEncoder(4, (8, 16, 16), 32, keypoints=5)
    seen = []
    enc.keypoints.register_forward_hook(lambda m, inputs, out: seen.append(m.coordinates(inputs[0])))
    image = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    enc(image)
    xy = enc.keypoint_coordinates(image)
    assert xy.shape == (2, 5, 2) and torch.equal(xy, seen[0])
    with pytest.raises(ValueError, match="has no keypoints"):
        ImageEncoder(4, (8, 16), 32).keypoint_coordinates(image)
