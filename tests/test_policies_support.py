"""Shared helpers for the policy tests (no tests here): a tiny spec, synthetic demonstrations, their stats."""

from __future__ import annotations

import torch

from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec
from cotrain.data.stats import batch_stats
from cotrain.policies.configuration_vla import FlowHeadConfig, SmallVLAConfig, TokenHeadConfig

TINY_SPEC = FeatureSpec(image_height=32, image_width=32)
TASKS = ["pick up the red cube", "push the blue cube to the left"]


def tiny_config(head: FlowHeadConfig | TokenHeadConfig, chunk_size: int = 4) -> SmallVLAConfig:
    return SmallVLAConfig(chunk_size=chunk_size, d_model=64, n_heads=4, n_layers=2, mlp_ratio=2, image_patch=4,
                          cnn_channels=(16, 32), value_hidden=32, head=head)


HEADS = {
    "flow_sde": FlowHeadConfig(n_layers=1, rl_method="flow_sde"),
    "flow_noise": FlowHeadConfig(n_layers=1, rl_method="flow_noise"),
    "token": TokenHeadConfig(n_layers=1),
}


def synthetic_batch(n: int = 8, chunk: int = 4, spec: FeatureSpec = TINY_SPEC, seed: int = 0) -> dict:
    """n distinct demonstrations: a solid-colour image, a random state, one of two instructions, and a fixed random
    action chunk in env units (Δxyz ~ cm, Δrpy ~ 0.1 rad, gripper ±1); the last sample's last step is padding."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, 256, (n, 1, 1, 3), generator=g, dtype=torch.uint8)
    image = colours.expand(n, spec.image_height, spec.image_width, 3).clone()
    state = torch.randn(n, spec.state_dim, generator=g) * 0.1
    scale = torch.tensor([0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0])
    action = (torch.rand(n, chunk, spec.action_dim, generator=g) * 2 - 1) * scale
    action[..., 6] = torch.sign(action[..., 6])
    is_pad = torch.zeros(n, chunk, dtype=torch.bool)
    is_pad[-1, -1] = True
    return {IMAGE_KEY: image, STATE_KEY: state, TASK_KEY: [TASKS[i % 2] for i in range(n)], ACTION_KEY: action,
            "action_is_pad": is_pad}


stats_of = batch_stats  # per-dimension mean/std/min/max of the batch's states and actions


def obs_of(batch: dict) -> dict:
    return {k: batch[k] for k in (IMAGE_KEY, STATE_KEY, TASK_KEY)}



def gradient_and_finite_difference(policy, batch: dict, param: torch.nn.Parameter, h: float = 1e-3, seed: int = 0):
    """(‖g‖, the central finite difference of the SFT loss along g/‖g‖) for the gradient g that backward() leaves on
    `param`, with the same random draws (noise, flow times, augmentation) in every evaluation. When `param` is wired
    into the loss and its gradient is the true derivative, the two agree: (L(θ + h·u) − L(θ − h·u)) / 2h = g·u = ‖g‖
    up to O(h²)."""
    def loss() -> torch.Tensor:
        torch.manual_seed(seed)
        return policy.sft_loss(batch)

    policy.zero_grad()
    loss().backward()
    g = param.grad.detach().clone()
    u = g / g.norm()
    with torch.no_grad():
        param += h * u
        up = loss().item()
        param -= 2 * h * u
        down = loss().item()
        param += h * u
    return g.norm().item(), (up - down) / (2 * h)
