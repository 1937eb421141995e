"""The small VLA-style policy (config: SmallVLAConfig): image, instruction and proprio tokens, a transformer trunk,
a value head on the pooled token, and an action head chosen by its config class (flow or token).

Token layout through the trunk: [summary, state, image patches…, instruction bytes…]; the summary token's output
feeds the value head and every output token is the action head's cross-attention memory.

`sample` does its host-side work first (checks, tokenising, whether any text is padding, the head's noise draws)
and then runs `_sample_core`, a function of tensors only: on CUDA one graph replay (`cuda_graph.GraphedSampler`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from cotrain.data.spec import FeatureSpec
from cotrain.policies import flow_head, rng, token_head  # noqa: F401  (registers the heads)
from cotrain.policies.action_head import Context, HeadShape, Noise, make_head
from cotrain.policies.augment import random_shift, shift_images
from cotrain.policies.base import Aux, Obs, Policy
from cotrain.policies.blocks import Block, ImageEncoder, TextEncoder
from cotrain.policies.configuration_vla import SmallVLAConfig
from cotrain.policies.cuda_graph import GraphedSampler
from cotrain.policies.normalize import Normalizer, Stats
from cotrain.policies.preprocess import action_targets, obs_tensors
from cotrain.policies.tokenizer import PAD_ID, VOCAB_SIZE, encode_tasks


class SmallVLAPolicy(Policy):
    def __init__(self, config: SmallVLAConfig, spec: FeatureSpec, stats: Any) -> None:
        super().__init__()
        self.config, self.spec, self.chunk_size = config, spec, config.chunk_size
        d = config.d_model
        self.normalizer = Normalizer(stats, spec, config.state_norm)
        if spec.image_height % config.image_patch or spec.image_width % config.image_patch:
            raise ValueError(f"SmallVLAConfig.image_patch={config.image_patch} must divide the feature spec's image size "
                             f"{spec.image_height}x{spec.image_width}")
        self.image_encoder = ImageEncoder(config.image_patch, config.cnn_channels, d, config.keypoints,
                                          config.cnn_blocks)
        stride = 2 ** (len(config.cnn_channels) - 1)
        grid_h, grid_w = spec.image_height // config.image_patch, spec.image_width // config.image_patch
        n_image_tokens = -(-grid_h // stride) * -(-grid_w // stride) + config.keypoints  # patches, then keypoints
        self.image_pos = nn.Parameter(torch.randn(n_image_tokens, d) * 0.02)
        self.text_encoder = TextEncoder(VOCAB_SIZE, PAD_ID, config.text_patch, d)
        self.text_pos = nn.Parameter(torch.randn(-(-config.max_text_tokens // config.text_patch), d) * 0.02)
        self.state_in = nn.Linear(spec.state_dim, d)
        self.summary = nn.Parameter(torch.randn(1, 2, d) * 0.02)  # [summary token, state-type embedding]
        self.trunk = nn.ModuleList(Block(d, config.n_heads, config.mlp_ratio, cross=False) for _ in range(config.n_layers))
        self.trunk_norm = nn.LayerNorm(d)
        self.value_head = nn.Sequential(nn.Linear(d, config.value_hidden), nn.GELU(), nn.Linear(config.value_hidden, 1))
        self.head = make_head(config.head, HeadShape(d, config.n_heads, config.mlp_ratio, config.chunk_size, spec.action_dim))
        self.graphs = GraphedSampler()
        """CUDA graphs of `_sample_core` (used when config.cuda_graphs and the policy is on CUDA)."""

    @property
    def device(self) -> torch.device:
        return self.image_pos.device

    def norm_stats(self) -> Stats:
        return self.normalizer.stats_dict()

    def fsdp_units(self) -> dict[str, tuple[str, ...]]:
        """FSDP2 shard units (cotrain.rl.distributed.shard_units): each trunk block, and the head's decoder, whose
        cross-attention keys/values `memory_kv` computes outside its forward."""
        return {f"trunk.{i}": () for i in range(len(self.trunk))} | {"head.decoder": ("memory_kv",)}

    def _device_inputs(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """(image uint8 [B, h, w, 3], state [B, S], instruction ids [B, L]) on the policy's device, and whether any
        instruction token is padding, decided on the CPU before the ids move (no device sync)."""
        image, state, tasks = obs_tensors(obs, self.spec, self.device)
        ids, _ = encode_tasks(tasks, self.config.max_text_tokens)
        return image, state, ids.to(self.device), self._text_has_padding(ids)

    def _text_has_padding(self, ids: torch.Tensor) -> bool:
        """Whether `TextEncoder` will mark any token as padding, decided on the CPU ids."""
        return bool(self.text_encoder.patch_padding(ids).any())

    def encode(self, obs: Obs, augment: bool = False) -> Context:
        """Trunk context of a raw observation; `augment` (training only) randomly shifts the images and adds
        `config.state_noise` to the normalised state first."""
        image, state, ids, has_pad = self._device_inputs(obs)
        if augment:
            image = random_shift(image, self.config.image_shift)
        return self._encode(image, state, ids, has_pad, self._state_jitter(state) if augment else None)

    def _state_jitter(self, state: torch.Tensor) -> torch.Tensor | None:
        if self.config.state_noise == 0:
            return None
        return self.config.state_noise * rng.randn(state.shape, state.device, state.dtype)

    def _encode(self, image: torch.Tensor, state: torch.Tensor, ids: torch.Tensor, has_pad: bool,
                state_jitter: torch.Tensor | None = None) -> Context:
        """`state_jitter` (training only) is added to the normalised state."""
        img = self.image_encoder(image) + self.image_pos
        txt, text_pad = self.text_encoder(ids)
        txt = txt + self.text_pos[: txt.shape[1]]
        b = img.shape[0]
        summary = self.summary[:, :1].expand(b, -1, -1)
        state_n = self.normalizer.normalize_state(state)
        if state_jitter is not None:
            state_n = state_n + state_jitter
        st = (self.state_in(state_n) + self.summary[0, 1])[:, None, :]
        x = torch.cat([summary, st, img, txt], dim=1)
        pad = None  # no mask at all lets attention take its fastest kernel
        if has_pad:
            pad = torch.cat([torch.zeros(b, 2 + img.shape[1], dtype=torch.bool, device=x.device), text_pad], dim=1)
        for block in self.trunk:
            x = block(x, pad)
        x = self.trunk_norm(x)
        return Context(tokens=x, pad_mask=pad, pooled=x[:, 0])

    def _actions_env(self, actions_n: torch.Tensor) -> torch.Tensor:
        if self.config.clip_actions:
            actions_n = actions_n.clamp(-1.0, 1.0)
        return self.normalizer.unnormalize_action(actions_n)

    @torch.no_grad()
    def sample(self, obs: Obs, explore: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Aux]:
        image, state, ids, has_pad = self._device_inputs(obs)
        noise = self.head.draw_noise(image.shape[0], self.device, explore)
        core = partial(self._sample_core, has_pad=has_pad, explore=explore)
        inputs = {"image": image, "state": state, "ids": ids, "noise": noise}
        if self.config.cuda_graphs and GraphedSampler.usable(self):
            return self.graphs(self, core, (has_pad, explore), inputs)
        return core(**inputs)

    def _sample_core(self, image: torch.Tensor, state: torch.Tensor, ids: torch.Tensor, noise: Noise, *,
                     has_pad: bool, explore: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Aux]:
        """`sample` on device tensors and pre-drawn noise: deterministic, tensor-only (capturable as a CUDA graph)."""
        ctx = self._encode(image, state, ids, has_pad)
        actions_n, logprob, aux = self.head.sample(ctx, explore, noise)
        return self._actions_env(actions_n), logprob, self._value(ctx), aux

    def evaluate(self, obs: Obs, aux: Aux) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ctx = self.encode(obs)
        logprob, entropy = self.head.evaluate(ctx, aux)
        return logprob, entropy, self._value(ctx)

    @torch.no_grad()
    def value(self, obs: Obs) -> torch.Tensor:
        """V(s) [B] from the trunk alone: no noise draw and no denoising (the value head reads the summary token)."""
        return self._value(self.encode(obs))

    def _value(self, ctx: Context) -> torch.Tensor:
        """V(s) [B] from the summary token (through a stop-gradient with config.value_detach)."""
        return self.value_head(ctx.pooled.detach() if self.config.value_detach else ctx.pooled)[:, 0]

    def sft_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        actions, is_pad = action_targets(batch, self.spec, self.chunk_size, self.device)
        ctx = self.encode(batch, augment=self.training)  # augmentation only while training (like dropout)
        return self.head.sft_loss(ctx, self.normalizer.normalize_action(actions), is_pad)

    def sft_loss_tensors(self, image: torch.Tensor, state: torch.Tensor, ids: torch.Tensor, actions: torch.Tensor,
                         is_pad: torch.Tensor, *, has_pad: bool, shift: torch.Tensor | None) -> torch.Tensor:
        """`sft_loss` on device tensors (uint8 images, ids tokenised, `shift` [B, 2] the images' random shift
        drawn by the caller, None = none): tensor-only, so a training step can be captured as a CUDA graph. With
        the same random numbers it equals `sft_loss` (which draws the shift first, then the rest, in this order)."""
        if shift is not None:
            image = shift_images(image, shift)
        ctx = self._encode(image, state, ids, has_pad, self._state_jitter(state) if self.training else None)
        return self.head.sft_loss(ctx, self.normalizer.normalize_action(actions), is_pad)
