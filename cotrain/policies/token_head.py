"""OpenVLA-style discrete action head: 256 uniform bins per normalised action dimension, cross-entropy for SFT,
categorical log-probs and entropy for RL. The H×A tokens are decoded in parallel from learned queries (as
OpenVLA-OFT), so a chunk is one decoder pass and its log-prob is the sum of the per-token log-probs.

Exploration samples by Gumbel-max (argmax of logits + Gumbel noise drawn beforehand), the same distribution as
Categorical(softmax(logits)) but with the randomness outside the network, so `sample` can be a CUDA graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cotrain.policies import rng
from cotrain.policies.action_head import ActionHead, Context, HeadShape, Noise, register_head
from cotrain.policies.base import Aux
from cotrain.policies.blocks import Decoder
from cotrain.policies.configuration_vla import TokenHeadConfig


def discretize(actions_n: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin index of a normalised action: floor((a + 1)/2 · n_bins), clamped to [0, n_bins − 1] (values outside
    [-1, 1] fall into the edge bins)."""
    return ((actions_n + 1) / 2 * n_bins).floor().clamp(0, n_bins - 1).long()


def bin_centers(tokens: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Normalised action at the centre of bin i: −1 + (i + ½)·2/n_bins."""
    return -1 + (tokens.float() + 0.5) * (2.0 / n_bins)


def gumbel_noise(u: torch.Tensor) -> torch.Tensor:
    """g = −log(−log u) for u ~ U(0, 1): argmax_i(logits_i + g_i) ~ Categorical(softmax(logits)) (Gumbel-max trick).
    u is clamped to [tiny, 1 − ε/2] (torch.rand can return exactly 0, where g would be −inf)."""
    info = torch.finfo(u.dtype)
    return -torch.log(-torch.log(u.clamp(info.tiny, 1.0 - info.eps / 2)))


@register_head(TokenHeadConfig)
class TokenHead(ActionHead):
    def __init__(self, cfg: TokenHeadConfig, shape: HeadShape) -> None:
        super().__init__()
        self.cfg, self.shape = cfg, shape
        self.queries = nn.Parameter(torch.randn(shape.chunk_size * shape.action_dim, shape.d_model) * 0.02)
        self.decoder = Decoder(shape.d_model, shape.n_heads, shape.mlp_ratio, cfg.n_layers)
        self.logits_out = nn.Linear(shape.d_model, cfg.n_bins)

    def logits(self, ctx: Context) -> torch.Tensor:
        """[B, H, A, n_bins]."""
        b = ctx.tokens.shape[0]
        h = self.decoder(self.queries.expand(b, -1, -1), self.decoder.memory_kv(ctx.tokens), ctx.pad_mask)
        return self.logits_out(h).view(b, self.shape.chunk_size, self.shape.action_dim, self.cfg.n_bins)

    def sft_loss(self, ctx: Context, actions_n: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the target bins, averaged over the non-padded chunk steps and the action dims."""
        logp = F.log_softmax(self.logits(ctx), dim=-1)
        nll = -logp.gather(-1, discretize(actions_n, self.cfg.n_bins)[..., None])[..., 0].mean(dim=-1)  # [B, H]
        valid = (~is_pad).to(nll.dtype)
        return (nll * valid).sum() / valid.sum().clamp_min(1.0)

    def draw_noise(self, batch: int, device: torch.device, explore: bool) -> Noise:
        """explore: Gumbel noise [B, H, A, n_bins], one per logit; explore=False (argmax) needs none."""
        if not explore:
            return {}
        u = rng.rand((batch, self.shape.chunk_size, self.shape.action_dim, self.cfg.n_bins), device)
        return {"gumbel": gumbel_noise(u)}

    def sample(self, ctx: Context, explore: bool, noise: Noise) -> tuple[torch.Tensor, torch.Tensor, Aux]:
        logits = self.logits(ctx)
        tokens = (logits + noise["gumbel"]).argmax(dim=-1) if explore else logits.argmax(dim=-1)
        logprob, _ = self._score(logits, tokens)
        return bin_centers(tokens, self.cfg.n_bins), logprob, {"tokens": tokens}

    def evaluate(self, ctx: Context, aux: Aux) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = aux["tokens"]
        if tokens.shape[1:] != (self.shape.chunk_size, self.shape.action_dim):
            raise ValueError(f"aux['tokens'] has shape {tuple(tokens.shape)}, expected [B, {self.shape.chunk_size}, "
                             f"{self.shape.action_dim}]")
        return self._score(self.logits(ctx), tokens)

    @staticmethod
    def _score(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ log π(token), Σ entropy) over the chunk's H×A independent categoricals."""
        logp = F.log_softmax(logits, dim=-1)
        logprob = logp.gather(-1, tokens[..., None])[..., 0].flatten(1).sum(dim=1)
        entropy = -(logp.exp() * logp).sum(dim=-1).flatten(1).sum(dim=1)
        return logprob, entropy
