"""Transformer building blocks (pre-norm, no dropout) and the small CNN image encoder.

Written out instead of using nn.TransformerEncoder so that inference and training take the same numerical path
(PyTorch's fused inference fast path differs in the last bits, which would make the PPO ratio of a freshly
sampled batch differ from exactly 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


KV = tuple[torch.Tensor, torch.Tensor]
"""Keys and values of a memory, [B, heads, M, D/heads] each."""


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def memory_kv(self, memory: torch.Tensor) -> KV:
        b, m, d = memory.shape
        k, v = self.kv(memory).view(b, m, 2, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, kv: KV, memory_pad: torch.Tensor | None) -> torch.Tensor:
        """x [B, L, D] attends to the memory whose keys/values are `kv`; memory_pad [B, M] bool, True = ignore."""
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)
        mask = None if memory_pad is None else ~memory_pad[:, None, None, :]
        y = F.scaled_dot_product_attention(q, *kv, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """x += SelfAttn(LN x); [x += CrossAttn(LN x, memory)]; x += MLP(LN x)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, cross: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, n_heads)
        self.norm_cross = nn.LayerNorm(d_model) if cross else None
        self.cross_attn = Attention(d_model, n_heads) if cross else None
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None, memory_kv: KV | None = None,
                memory_pad: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, self.self_attn.memory_kv(y), pad)
        if self.cross_attn is not None:
            if memory_kv is None:
                raise ValueError("a cross-attention block needs `memory_kv`")
            x = x + self.cross_attn(self.norm_cross(x), memory_kv, memory_pad)
        return x + self.mlp(self.norm2(x))


class Decoder(nn.Module):
    """Stack of cross-attending blocks over a head's queries, then a final LayerNorm. The memory's keys and values
    are computed once per context (`memory_kv`) and reused by every denoising step."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, n_layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, cross=True) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def memory_kv(self, memory: torch.Tensor) -> list[KV]:
        return [block.cross_attn.memory_kv(memory) for block in self.blocks]

    def forward(self, x: torch.Tensor, memory_kv: list[KV], memory_pad: torch.Tensor) -> torch.Tensor:
        for block, kv in zip(self.blocks, memory_kv):
            x = block(x, memory_kv=kv, memory_pad=memory_pad)
        return self.norm(x)


class ResidualConv(nn.Module):
    """x + GN(conv3×3(GELU(GN(conv3×3(x))))), then GELU: a stride-1 ResNet basic block (GroupNorm, as in
    Diffusion Policy's image encoder), which deepens a stage without changing its resolution."""

    def __init__(self, c: int) -> None:
        super().__init__()
        groups = math.gcd(8, c)
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(groups, c), nn.GELU(),
                                  nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(groups, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.body(x))


class ImageEncoder(nn.Module):
    """uint8 [B, H, W, 3] -> tokens [B, (H/s)(W/s) + K, D] with s = patch·2^(n−1): a patchify conv (kernel = stride =
    patch) to channels[0], then a stride-2 3×3 conv per further channel count; GroupNorm + GELU after each, then
    `blocks` stride-1 residual blocks (`ResidualConv`) per stage. With `keypoints` K > 0, K spatial-softmax
    keypoint tokens (`SpatialSoftmax`, read from the feature map of the second stage, stride 2·patch) follow the
    patch tokens: exact image coordinates for the trunk, which patch tokens of 16 px carry only implicitly."""

    def __init__(self, patch: int, channels: tuple[int, ...], d_model: int, keypoints: int = 0,
                 blocks: int = 0) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        c_in = 3
        for i, c in enumerate(channels):
            conv = nn.Conv2d(c_in, c, patch, stride=patch) if i == 0 else nn.Conv2d(c_in, c, 3, stride=2, padding=1)
            self.convs.append(nn.Sequential(conv, nn.GroupNorm(math.gcd(8, c), c), nn.GELU(),
                                            *(ResidualConv(c) for _ in range(blocks))))
            c_in = c
        self.proj = nn.Conv2d(c_in, d_model, 1)
        self.keypoint_stage = min(1, len(channels) - 1)
        self.keypoints = SpatialSoftmax(channels[self.keypoint_stage], keypoints, d_model) if keypoints else None

    @staticmethod
    def pixels(image: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] in [0, 255] -> float [B, 3, H, W] in [-1, 1], the first conv's input."""
        return image.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def keypoint_coordinates(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> the keypoints' expected (x, y) [B, K, 2], running only the stages up to the
        keypoint stage (what `forward` turns into keypoint tokens; e.g. for pretraining on object positions)."""
        if self.keypoints is None:
            raise ValueError("ImageEncoder.keypoint_coordinates: this encoder has no keypoints (keypoints=0)")
        x = self.pixels(image)
        for conv in self.convs[: self.keypoint_stage + 1]:
            x = conv(x)
        return self.keypoints.coordinates(x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.pixels(image)
        kp = None
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i == self.keypoint_stage and self.keypoints is not None:
                kp = self.keypoints(x)
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        return tokens if kp is None else torch.cat([tokens, kp], dim=1)


class SpatialSoftmax(nn.Module):
    """Feature map [B, C, h, w] -> K keypoint tokens [B, K, D] (Levine et al. 2016; robomimic's image encoder).

    A 3×3 conv + GELU + 1×1 conv give K maps a_k; p_k = softmax over the h·w cells of a_k / τ (τ learned);
    the keypoint is the expected cell centre (x_k, y_k) = Σ p_k(i, j)·(x_j, y_i), with x, y ∈ [−1, 1]. Each
    keypoint becomes a token from Fourier features of (x_k, y_k) (frequencies 2^0…2^4 · π, so a 1-pixel move
    changes the token visibly) plus a learned identity embedding e_k."""

    n_freqs = 5

    def __init__(self, channels: int, keypoints: int, d_model: int) -> None:
        super().__init__()
        self.maps = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(), nn.Conv2d(channels, keypoints, 1))
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.proj = nn.Linear(2 + 4 * self.n_freqs, d_model)
        self.identity = nn.Parameter(torch.randn(keypoints, d_model) * 0.02)

    def coordinates(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> expected (x, y) per keypoint, [B, K, 2] in [−1, 1]."""
        a = self.maps(features)
        b, k, h, w = a.shape
        p = torch.softmax(a.flatten(2) / self.log_temperature.exp(), dim=-1).view(b, k, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=a.device)
        xs = torch.linspace(-1.0, 1.0, w, device=a.device)
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        xy = self.coordinates(features)
        freqs = math.pi * 2.0 ** torch.arange(self.n_freqs, device=xy.device, dtype=xy.dtype)
        angles = (xy[..., None] * freqs).flatten(-2)  # [B, K, 2F]
        return self.proj(torch.cat([xy, torch.sin(angles), torch.cos(angles)], dim=-1)) + self.identity


class TextEncoder(nn.Module):
    """Byte ids [B, L] -> tokens [B, ceil(L/p), D]: each run of p bytes (a "byte patch") is embedded as one token,
    so an instruction costs the trunk L/p tokens instead of L. A patch is padding when all its bytes are."""

    def __init__(self, vocab_size: int, pad_id: int, patch: int, d_model: int) -> None:
        super().__init__()
        self.patch, self.pad_id = patch, pad_id
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.proj = nn.Linear(patch * d_model, d_model)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self._padded(ids)
        tokens = self.proj(self.embed(ids).view(ids.shape[0], -1, self.patch * self.embed.embedding_dim))
        return tokens, self._patch_is_pad(ids)

    def patch_padding(self, ids: torch.Tensor) -> torch.Tensor:
        """bool [B, ceil(L/p)]: which tokens `forward` marks as padding (runs on CPU ids too, before they move)."""
        return self._patch_is_pad(self._padded(ids))

    def _padded(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        return F.pad(ids, (0, -(-length // self.patch) * self.patch - length), value=self.pad_id)

    def _patch_is_pad(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids == self.pad_id).view(ids.shape[0], -1, self.patch).all(dim=-1)


def time_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """π0's sine-cosine embedding of the flow time t [B] -> [B, dim] (periods from min_period to max_period)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.float()[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
