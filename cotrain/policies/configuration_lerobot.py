"""Config of the LeRobot VLA adapter (paired with lerobot_adapter.py): LeRobot 0.6.1's π0.5 behind our Policy
interface, with our normalisation, our flow chain (Flow-SDE / Flow-Noise) and a value head on the VLM prefix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from cotrain.config_io import require
from cotrain.policies.configuration_vla import FlowHeadConfig


@dataclass(frozen=True)
class LeRobotVLAConfig:
    type_name: ClassVar[str] = "lerobot_vla"

    size: Literal["full", "tiny"] = "full"
    """"full": LeRobot's own π0.5 construction (PaliGemma gemma_2b + gemma_300m action expert, ~3.6B parameters;
    the only VLM size whose width matches PaliGemma's fixed 2048-wide image projector). "tiny": the same LeRobot and
    transformers classes at a few-k width for CPU tests (random weights only)."""
    pretrained_path: str | None = None
    """A local LeRobot π0.5 directory with model.safetensors (e.g. a downloaded lerobot/pi05_base); None = random
    weights. Nothing is fetched from the hub; a missing file is an error naming it. Loading is strict (missing or
    unexpected keys are an error) except for the PaliGemma and expert `lm_head`s, which this adapter does not build."""
    chunk_size: int = 4
    """H: actions per chunk (LeRobot pads actions to 32 dims internally)."""
    image_size: int = 224
    """Square SigLIP input; camera images are resized with padding (LeRobot's resize_with_pad)."""
    tokenizer: Literal["paligemma", "bytes"] = "paligemma"
    """"paligemma": the PaliGemma tokenizer from the local Hugging Face cache (`tokenizer_name`), what pretrained
    weights expect; "bytes": UTF-8 bytes as ids (no download; for random-weight and tiny builds)."""
    tokenizer_name: str = "google/paligemma-3b-pt-224"
    """Hub id of the PaliGemma tokenizer, read from the local Hugging Face cache (local_files_only=True); unused
    when `tokenizer_dir` is set."""
    tokenizer_dir: str | None = None
    """A local directory holding the PaliGemma tokenizer (tokenizer_config.json and tokenizer.json, e.g. from
    `huggingface-cli download google/paligemma-3b-pt-224 --include "tokenizer*"`); None = `tokenizer_name`."""
    max_text_tokens: int = 200
    """Prompt length in tokens (LeRobot's tokenizer_max_length); prompts are padded / refused beyond it."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """LeRobot's precision switch (bfloat16 keeps the vision tower and norms in float32)."""
    value_hidden: int = 256
    """Hidden width of the value MLP on the mean-pooled VLM prefix."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward instead of storing them (in training mode, as Stage I and II run the
    policy): each VLM and expert layer in `sft_loss`
    (LeRobot's own), and in `evaluate` each VLM layer of the prefix pass with its keys/values kept for the
    denoising steps. Same values and gradients, less memory, ~1/3 more compute per update."""
    freeze_vision_tower: bool = False
    """Keep the SigLIP vision tower fixed (no gradients, no optimizer state); the projector and the language model
    still train."""
    clip_actions: bool = True
    """Clip the normalised action to [-1, 1] before mapping to env units."""
    head: FlowHeadConfig = field(default_factory=FlowHeadConfig)
    """Denoising steps and the RL method; its n_layers is unused here and must stay at its default."""

    def __post_init__(self) -> None:
        require(self.chunk_size >= 1, f"LeRobotVLAConfig.chunk_size must be >= 1, got {self.chunk_size}")
        require(self.image_size % 16 == 0, f"LeRobotVLAConfig.image_size must be a multiple of 16, got {self.image_size}")
        require(self.head.n_layers == FlowHeadConfig.n_layers,
                "LeRobotVLAConfig.head.n_layers is not used (the action expert is LeRobot's gemma_300m); leave it unset")
        require(self.pretrained_path is None or self.size == "full",
                "LeRobotVLAConfig: pretrained_path needs size='full' (tiny builds have random weights only)")
        require(self.tokenizer_dir is None or self.tokenizer == "paligemma",
                "LeRobotVLAConfig: tokenizer_dir is the PaliGemma tokenizer's directory; it needs tokenizer='paligemma'")
        require(not (self.pretrained_path is not None and self.tokenizer == "bytes"),
                "LeRobotVLAConfig: pretrained weights expect tokenizer='paligemma', not 'bytes'")
