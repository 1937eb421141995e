"""Configs of the small VLA-style policy and its two action heads (paired with modeling_vla.py, flow_head.py,
token_head.py). Strict: every field is read, cross-field constraints are checked in __post_init__."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from cotrain.config_io import require


@dataclass(frozen=True)
class FlowHeadConfig:
    """π0.5-style flow-matching action expert: a small transformer decoder predicting the velocity of the chunk."""

    type_name: ClassVar[str] = "flow"

    num_steps: int = 4
    """K: Euler denoising steps from noise (t = 1) to the action chunk (t = 0)."""
    n_layers: int = 2
    """Decoder layers of the action expert (self-attention over the chunk, cross-attention to the trunk)."""
    rl_method: Literal["flow_sde", "flow_noise"] = "flow_sde"
    """How explore=True sampling is made stochastic and scored (πRL): one SDE step per rollout, or a learned noise
    network on every step."""
    sde_noise_level: float = 0.5
    """a in Flow-SDE's σ_t = a·√(t/(1−t))."""
    noise_std_min: float = 0.08
    """Flow-Noise: lower bound of the learned per-dimension noise std (normalised action units)."""
    noise_std_max: float = 0.16
    """Flow-Noise: upper bound of the learned noise std."""
    eval_init: Literal["zero", "noise"] = "zero"
    """explore=False starts the ODE at x = 0 (deterministic, the default) or at random noise (π0's sampler)."""

    def __post_init__(self) -> None:
        require(self.num_steps >= 1, f"FlowHeadConfig.num_steps must be >= 1, got {self.num_steps}")
        require(self.n_layers >= 1, f"FlowHeadConfig.n_layers must be >= 1, got {self.n_layers}")
        require(self.sde_noise_level > 0, f"FlowHeadConfig.sde_noise_level must be > 0, got {self.sde_noise_level}")
        require(0 < self.noise_std_min <= self.noise_std_max,
                f"FlowHeadConfig: need 0 < noise_std_min <= noise_std_max, got {self.noise_std_min}, {self.noise_std_max}")


@dataclass(frozen=True)
class TokenHeadConfig:
    """OpenVLA-style discrete action head: each action dimension of each chunk step is one of `n_bins` uniform bins
    over the normalised range [-1, 1]. Tokens are decoded in parallel (one query per (step, dim), as OpenVLA-OFT)
    rather than autoregressively, so a chunk costs one decoder pass."""

    type_name: ClassVar[str] = "token"

    n_bins: int = 256
    """Bins per action dimension."""
    n_layers: int = 2
    """Decoder layers over the H×A action queries."""

    def __post_init__(self) -> None:
        require(self.n_bins >= 2, f"TokenHeadConfig.n_bins must be >= 2, got {self.n_bins}")
        require(self.n_layers >= 1, f"TokenHeadConfig.n_layers must be >= 1, got {self.n_layers}")


@dataclass(frozen=True)
class SmallVLAConfig:
    """The embedded default policy: CNN image tokens + byte-level instruction tokens + a proprio token, a
    transformer trunk, a value head on the pooled token, and one action head."""

    type_name: ClassVar[str] = "small_vla"

    chunk_size: int = 4
    """H: actions per chunk."""
    d_model: int = 128
    """Width of every token (trunk and heads)."""
    n_heads: int = 4
    """Attention heads (trunk and heads)."""
    n_layers: int = 3
    """Trunk transformer layers."""
    mlp_ratio: int = 4
    """Feed-forward width = mlp_ratio · d_model."""
    image_patch: int = 4
    """Kernel and stride of the image encoder's first (patchify) conv; image sides must be multiples of it."""
    cnn_channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the patchify conv and of each following stride-2 conv; the image becomes
    (H/s)·(W/s) tokens with s = image_patch·2^(n−1) (8×8 for 128² with the defaults)."""
    cnn_blocks: int = 0
    """Stride-1 residual 3×3 conv blocks after each of those convs (`blocks.ResidualConv`): a deeper encoder at
    the same token grid; 0 = the plain strided stack."""
    keypoints: int = 0
    """K spatial-softmax keypoint tokens added to the image tokens (`blocks.SpatialSoftmax`); 0 = none."""
    max_text_tokens: int = 96
    """Longest instruction in bytes + 1; a longer one is refused."""
    text_patch: int = 4
    """Bytes per instruction token (byte patches keep the trunk short)."""
    value_hidden: int = 128
    """Hidden width of the value MLP."""
    value_detach: bool = False
    """Stage II: the value head reads the trunk's summary token through a stop-gradient, so the value loss trains
    the value MLP only and cannot reshape the features the action head reads. False: the critic's gradient also
    moves the shared trunk."""
    clip_actions: bool = True
    """Clip the normalised action to [-1, 1] (the demonstrations' min..max) before mapping to env units."""
    state_norm: Literal["mean_std", "min_max"] = "mean_std"
    """How the proprio state is normalised: (s − mean)/std, or min/max to [−1, 1] (less amplification of
    near-constant dimensions such as the top-down TCP's roll/pitch; see `cotrain.policies.normalize`)."""
    image_shift: int = 0
    """Training-time augmentation: `sft_loss` in training mode shifts each image by a random (dy, dx) in
    [−image_shift, image_shift]² pixels, borders replicated (DrQ random shift; `cotrain.policies.augment`). 0 = off.
    `sample` / `evaluate` never augment."""
    state_noise: float = 0.0
    """Training-time augmentation: `sft_loss` in training mode adds Gaussian noise of this std (normalised state
    units) to the proprio state. With ~100 demos the proprio trajectory alone identifies a demo, and a policy can
    replay it instead of looking at the object (the copycat shortcut); noise makes the state too coarse for that
    while the image still locates the object. 0 = off. `sample` / `evaluate` never add it."""
    head: FlowHeadConfig | TokenHeadConfig = field(default_factory=FlowHeadConfig)
    """The action head; its config class selects its module."""
    cuda_graphs: bool = True
    """On CUDA, run `sample` as one CUDA-graph replay per input shape (`cotrain.policies.cuda_graph`) instead of
    launching its several hundred small kernels one by one (CPU-bound at this model size). Same numbers as the
    eager path; false = always eager (debugging, profiling kernels). No effect on CPU, `evaluate` or `sft_loss`."""

    def __post_init__(self) -> None:
        require(self.chunk_size >= 1, f"SmallVLAConfig.chunk_size must be >= 1, got {self.chunk_size}")
        require(self.d_model % self.n_heads == 0,
                f"SmallVLAConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        require(self.n_layers >= 1, f"SmallVLAConfig.n_layers must be >= 1, got {self.n_layers}")
        require(len(self.cnn_channels) >= 1 and all(c > 0 for c in self.cnn_channels),
                f"SmallVLAConfig.cnn_channels must be a non-empty list of positive ints, got {list(self.cnn_channels)}")
        require(self.image_patch >= 1 and self.text_patch >= 1,
                f"SmallVLAConfig.image_patch and text_patch must be >= 1, got {self.image_patch}, {self.text_patch}")
        require(self.max_text_tokens >= 2, f"SmallVLAConfig.max_text_tokens must be >= 2, got {self.max_text_tokens}")
        require(self.mlp_ratio >= 1 and self.value_hidden >= 1, "SmallVLAConfig.mlp_ratio and value_hidden must be >= 1")
        require(self.cnn_blocks >= 0, f"SmallVLAConfig.cnn_blocks must be >= 0, got {self.cnn_blocks}")
        require(self.keypoints >= 0, f"SmallVLAConfig.keypoints must be >= 0, got {self.keypoints}")
        require(self.image_shift >= 0, f"SmallVLAConfig.image_shift must be >= 0, got {self.image_shift}")
        require(self.state_noise >= 0, f"SmallVLAConfig.state_noise must be >= 0, got {self.state_noise}")
