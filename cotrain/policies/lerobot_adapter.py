"""LeRobot 0.6.1's π0.5 behind our Policy interface (config: LeRobotVLAConfig).

What is LeRobot's: the PaliGemma + action-expert network (`PI05Pytorch`: embed_prefix / embed_suffix / the joint
transformer / the flow-matching forward used as the SFT loss), its image resize-with-pad and attention masks, its
checkpoint key fixes. What is ours: raw-observation preprocessing with our NormStats (min/max → [-1, 1]), π0.5's
prompt "Task: …, State: <256-bin state>;\\nAction: ", the denoising chain with Flow-SDE / Flow-Noise log-probs
(`FlowChain`, shared with the small VLA's flow head), and a value head on the mean-pooled VLM prefix.

Why the gemma_300m VLM fails: LeRobot's PaliGemmaWithExpertModel fixes the SigLIP projector at 2048 wide
(vision_config.projection_dim = 2048), which only matches the gemma_2b text width; a gemma_300m VLM (1024 wide)
gets 2048-wide image tokens — the reported 2048-vs-1024 mismatch. The working π0.5 is gemma_2b + gemma_300m expert.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cotrain.data.spec import FeatureSpec
from cotrain.policies import flow_logprob as fl
from cotrain.policies import rng
from cotrain.policies.base import Aux, Obs, Policy
from cotrain.policies.configuration_lerobot import LeRobotVLAConfig
from cotrain.policies.flow_head import FlowChain
from cotrain.policies.normalize import Normalizer, Stats
from cotrain.policies.preprocess import action_targets, obs_tensors

MAX_DIM = 32
"""LeRobot's max_state_dim / max_action_dim: states and actions are zero-padded to it."""
TINY = {"width": 64, "expert_width": 32, "depth": 2, "mlp": 128, "heads": 8, "head_dim": 8, "vocab": 512,
        "vision_width": 32, "vision_patch": 16}
"""The tiny build (LeRobot's joint attention hard-codes 8 heads; the bytes tokenizer needs ids < 258)."""


class LeRobotVLAPolicy(Policy):
    def __init__(self, config: LeRobotVLAConfig, spec: FeatureSpec, stats: Any, load_pretrained: bool = True) -> None:
        super().__init__()
        from lerobot.configs import FeatureType, PolicyFeature
        from lerobot.policies.pi05.configuration_pi05 import PI05Config

        self.config, self.spec, self.chunk_size = config, spec, config.chunk_size
        # local files first: a missing tokenizer or weights file fails at once, not after minutes of building
        self._tokenize = _make_tokenizer(config)
        if load_pretrained and config.pretrained_path is not None:
            require_files(Path(config.pretrained_path), PRETRAINED_FILES, "pretrained_path")
        self.normalizer = Normalizer(stats, spec)
        lr_cfg = PI05Config(chunk_size=config.chunk_size, n_action_steps=config.chunk_size,
                            num_inference_steps=config.head.num_steps, image_resolution=(config.image_size,) * 2,
                            tokenizer_max_length=config.max_text_tokens, dtype=config.dtype, device="cpu",
                            max_state_dim=MAX_DIM, max_action_dim=MAX_DIM)
        lr_cfg.input_features = {"observation.image": PolicyFeature(FeatureType.VISUAL, (3, config.image_size, config.image_size)),
                                 "observation.state": PolicyFeature(FeatureType.STATE, (spec.state_dim,))}
        lr_cfg.output_features = {"action": PolicyFeature(FeatureType.ACTION, (spec.action_dim,))}
        self.lerobot_config = lr_cfg
        self.model = _build_full(lr_cfg) if config.size == "full" else _build_tiny(lr_cfg)
        _drop_output_layers(self.model)
        if load_pretrained and config.pretrained_path is not None:
            _load_pretrained(self.model, lr_cfg, Path(config.pretrained_path))
        pwe = self.model.paligemma_with_expert
        pwe.freeze_vision_encoder = config.freeze_vision_tower
        pwe._set_requires_grad()  # noqa: SLF001  (LeRobot's: vision tower without gradients when frozen)
        if config.gradient_checkpointing:
            _enable_checkpointing(self.model)
        vlm_width = self.model.paligemma_with_expert.paligemma.config.text_config.hidden_size
        expert_width = self.model.action_in_proj.out_features
        self.chain = FlowChain(config.head, config.chunk_size, MAX_DIM, expert_width)
        self.value_head = nn.Sequential(nn.Linear(vlm_width, config.value_hidden), nn.GELU(), nn.Linear(config.value_hidden, 1))

    @property
    def device(self) -> torch.device:
        return self.model.action_in_proj.weight.device

    def norm_stats(self) -> Stats:
        return self.normalizer.stats_dict()

    # -- inputs ------------------------------------------------------------------------------------------------
    def _inputs(self, obs: Obs) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        from lerobot.policies.common.vla_utils import resize_with_pad_torch

        image, state, tasks = obs_tensors(obs, self.spec, self.device)
        img = resize_with_pad_torch(image.float() / 255.0, self.config.image_size, self.config.image_size)
        img = (img * 2.0 - 1.0).permute(0, 3, 1, 2)  # SigLIP takes [-1, 1], channels first
        # π0.5 prompt: the state, min/max-normalised to [-1, 1], as 256 bins in text (LeRobot's processor_pi05)
        lo, hi = self.normalizer.state_min, self.normalizer.state_max
        unit = ((state - lo) / (hi - lo).clamp_min(1e-6) * 2 - 1).clamp(-1, 1)
        bins = torch.bucketize(unit, torch.linspace(-1, 1, 257, device=unit.device)[1:-1], right=True)
        prompts = [f"Task: {t.strip().replace('_', ' ')}, State: {' '.join(map(str, b.tolist()))};\nAction: "
                   for t, b in zip(tasks, bins)]
        tokens, masks = self._tokenize(prompts)
        ones = torch.ones(img.shape[0], dtype=torch.bool, device=self.device)
        return [img], [ones], tokens.to(self.device), masks.to(self.device)

    def _prefix(self, obs: Obs) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """(prefix pad mask, the prefix's key/value cache, value [B]) — one VLM pass shared by all denoising steps."""
        from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d

        m = self.model
        embs, pad, att = m.embed_prefix(*self._inputs(obs))
        att_4d, position_ids = prepare_attention_masks_4d(make_att_2d_masks(pad, att)), torch.cumsum(pad, 1) - 1
        lm = m.paligemma_with_expert.paligemma.model.language_model
        lm.config._attn_implementation = "eager"  # noqa: SLF001
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            prefix_out, kv = _checkpointed_prefix(lm, embs, att_4d, position_ids)
        else:
            (prefix_out, _), kv = m.paligemma_with_expert.forward(attention_mask=att_4d, position_ids=position_ids,
                                                                  past_key_values=None, inputs_embeds=[embs, None],
                                                                  use_cache=True)
        w = pad.to(prefix_out.dtype)[..., None]
        pooled = ((prefix_out * w).sum(1) / w.sum(1).clamp_min(1.0)).float()
        return pad, kv, self.value_head(pooled)[:, 0]

    def _velocity(self, prefix_pad: torch.Tensor, kv: Any, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LeRobot's denoise_step, also returning the expert's output tokens (Flow-Noise's features)."""
        from lerobot.policies.common.vla_utils import clone_past_key_values, make_att_2d_masks, prepare_attention_masks_4d

        m = self.model
        embs, pad, att, adarms = m.embed_suffix(x_t, t)
        b, n, p = prefix_pad.shape[0], pad.shape[1], prefix_pad.shape[1]
        masks = torch.cat([prefix_pad[:, None, :].expand(b, n, p), make_att_2d_masks(pad, att)], dim=2)
        position_ids = prefix_pad.sum(-1)[:, None] + torch.cumsum(pad, dim=1) - 1
        m.paligemma_with_expert.gemma_expert.model.config._attn_implementation = "eager"  # noqa: SLF001
        (_, out), _ = m.paligemma_with_expert.forward(attention_mask=prepare_attention_masks_4d(masks), position_ids=position_ids,
                                                      past_key_values=clone_past_key_values(kv),
                                                      inputs_embeds=[None, embs], use_cache=False, adarms_cond=[None, adarms])
        h = out[:, -self.chunk_size :].float()
        return m.action_out_proj(h), h

    def _actions_env(self, x: torch.Tensor) -> torch.Tensor:
        a = x[..., : self.spec.action_dim]
        return self.normalizer.unnormalize_action(a.clamp(-1.0, 1.0) if self.config.clip_actions else a)

    # -- the Policy interface ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, obs: Obs, explore: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Aux]:
        pad, kv, value = self._prefix(obs)
        x, logprob, aux = self.chain.sample(partial(self._velocity, pad, kv), pad.shape[0], self.device, explore)
        return self._actions_env(x), logprob, value, aux

    @torch.no_grad()
    def value(self, obs: Obs) -> torch.Tensor:
        """V(s) [B] from one VLM pass over the prefix: no denoising."""
        return self._prefix(obs)[2]

    def evaluate(self, obs: Obs, aux: Aux) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pad, kv, value = self._prefix(obs)
        logprob, entropy = self.chain.evaluate(partial(self._velocity, pad, kv), aux)
        return logprob, entropy, value

    def sft_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """LeRobot's flow-matching loss on our normalised actions, padded steps and padded dims masked out."""
        actions, is_pad = action_targets(batch, self.spec, self.chunk_size, self.device)
        target = F.pad(self.normalizer.normalize_action(actions), (0, MAX_DIM - self.spec.action_dim))
        noise = rng.randn_like(target)
        t = fl.sample_time(target.shape[0], device=target.device)
        losses = self.model.forward(*self._inputs(batch), target, noise, t)[..., : self.spec.action_dim].mean(-1)
        valid = (~is_pad).to(losses.dtype)
        return (losses * valid).sum() / valid.sum().clamp_min(1.0)


def _build_full(lr_cfg: Any) -> nn.Module:
    """LeRobot's own construction: PaliGemma gemma_2b + gemma_300m action expert (random weights)."""
    from lerobot.policies.pi05.modeling_pi05 import PI05Pytorch

    return PI05Pytorch(lr_cfg)


def _build_tiny(lr_cfg: Any) -> nn.Module:
    """The same LeRobot / transformers classes as `_build_full`, configured through the library's own Gemma,
    SigLIP and PaliGemma config objects at a tiny width and depth (PI05Pytorch.__init__ only knows gemma_2b /
    gemma_300m, so its few lines are repeated here with the tiny configs)."""
    from lerobot.policies.pi05.modeling_pi05 import PaliGemmaWithExpertModel, PI05Pytorch
    from lerobot.policies.pi_gemma import PaliGemmaForConditionalGenerationWithPiGemma, PiGemmaForCausalLM
    from transformers.models.auto import CONFIG_MAPPING

    s = TINY
    vlm = CONFIG_MAPPING["paligemma"]()
    text = vlm.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = s["width"], s["mlp"], s["depth"]
    text.num_attention_heads, text.num_key_value_heads, text.head_dim = s["heads"], 1, s["head_dim"]
    text.hidden_activation, text.vocab_size, text.use_adarms, text.adarms_cond_dim = "gelu_pytorch_tanh", s["vocab"], False, None
    vlm._vocab_size = vlm.image_token_index = s["vocab"]  # noqa: SLF001
    vision = vlm.vision_config
    vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers = s["vision_width"], 2 * s["vision_width"], 1
    vision.num_attention_heads, vision.patch_size, vision.image_size = 2, s["vision_patch"], lr_cfg.image_resolution[0]
    vision.projection_dim = s["width"]  # must equal the text width: the mismatch LeRobot's gemma_300m VLM hits
    expert = CONFIG_MAPPING["gemma"](head_dim=s["head_dim"], hidden_size=s["expert_width"], intermediate_size=s["mlp"],
                                     num_attention_heads=s["heads"], num_hidden_layers=s["depth"], num_key_value_heads=1,
                                     vocab_size=s["vocab"], hidden_activation="gelu_pytorch_tanh",
                                     use_adarms=True, adarms_cond_dim=s["expert_width"])
    pwe = PaliGemmaWithExpertModel.__new__(PaliGemmaWithExpertModel)
    nn.Module.__init__(pwe)
    pwe.freeze_vision_encoder = pwe.train_expert_only = False
    pwe.paligemma = PaliGemmaForConditionalGenerationWithPiGemma(config=vlm)
    pwe.gemma_expert = PiGemmaForCausalLM(config=expert)
    pwe.gemma_expert.model.embed_tokens = None
    model = PI05Pytorch.__new__(PI05Pytorch)
    nn.Module.__init__(model)
    model.config, model.rtc_processor, model.gradient_checkpointing_enabled = lr_cfg, None, False
    model.paligemma_with_expert = pwe
    model.action_in_proj = nn.Linear(lr_cfg.max_action_dim, s["expert_width"])
    model.action_out_proj = nn.Linear(s["expert_width"], lr_cfg.max_action_dim)
    model.time_mlp_in = nn.Linear(s["expert_width"], s["expert_width"])
    model.time_mlp_out = nn.Linear(s["expert_width"], s["expert_width"])
    return model


OUTPUT_LAYERS = ("paligemma_with_expert.paligemma.lm_head.", "paligemma_with_expert.gemma_expert.lm_head.")
"""The VLM's and the expert's vocabulary projections (257,152 × 2048 and × 1024 at full size: ~0.79 B parameters)."""


def _drop_output_layers(model: nn.Module) -> None:
    """π0.5 reads the last hidden states of the VLM (prefix) and the expert (action tokens), never vocabulary logits:
    the two `lm_head`s get no gradient, yet would sit in memory with their optimizer state. They are removed."""
    pwe = model.paligemma_with_expert
    pwe.paligemma.lm_head = None
    pwe.gemma_expert.lm_head = None


def _enable_checkpointing(model: nn.Module) -> None:
    """LeRobot's checkpoints, two of them changed. (1) `sft_loss`: LeRobot checkpoints every joint VLM + expert layer
    and also the whole joint pass around them, so each layer would run three times; here only the layers are (the
    embeddings and the output projection as LeRobot does). (2) The VLM's own flag stays off: with it the prefix pass
    drops its key/value cache (`use_cache=False`), which `evaluate`'s denoising steps need; `_checkpointed_prefix`
    checkpoints that pass instead."""
    model._apply_checkpoint = MethodType(_apply_checkpoint, model)  # noqa: SLF001  (a deep copy rebinds it)
    model.paligemma_with_expert.gemma_expert.model.gradient_checkpointing = True  # the per-layer joint checkpoints


def _apply_checkpoint(model: nn.Module, func, *args: Any, **kwargs: Any):  # noqa: ANN001, ANN202
    """PI05Pytorch._apply_checkpoint, except around the joint pass (`forward_func`), whose layers are checkpointed
    one by one inside it."""
    from torch.utils.checkpoint import checkpoint

    if func.__name__ == "forward_func" or not (model.training and torch.is_grad_enabled()):
        return func(*args, **kwargs)
    return checkpoint(func, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)


class _KeyValues:
    """Stands in for the cache in one decoder layer's attention and keeps that layer's keys and values."""

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):  # noqa: ANN204, ARG002
        self.keys, self.values = keys, values
        return keys, values


def _layer_with_kv(layer: nn.Module, h: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor,
                   position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    kv = _KeyValues()
    out = layer(h, attention_mask=mask, position_ids=position_ids, past_key_values=kv, use_cache=True,
                position_embeddings=position_embeddings)
    return out, kv.keys, kv.values


def _checkpointed_prefix(lm: nn.Module, embs: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The VLM's prefix pass (PiGemmaModel.forward with use_cache=True) with each decoder layer recomputed in backward:
    returns the normed last hidden states and a DynamicCache of every layer's keys/values for the denoising steps."""
    from torch.utils.checkpoint import checkpoint
    from transformers import DynamicCache

    h = embs.to(torch.bfloat16) if lm.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16 else embs
    position_embeddings = lm.rotary_emb(h, position_ids)
    kv = []
    for layer in lm.layers:
        h, k, v = checkpoint(_layer_with_kv, layer, h, mask, position_ids, position_embeddings, use_reentrant=False)
        kv.append((k, v))
    return lm.norm(h, None)[0], DynamicCache(tuple(kv))


def require_files(directory: Path, names: tuple[str, ...], key: str) -> None:
    """Raise FileNotFoundError naming `LeRobotVLAConfig.<key>` and each missing file, one line per file."""
    if not directory.is_dir():
        raise FileNotFoundError(f"LeRobotVLAConfig.{key}: {directory} is not a directory")
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError("\n".join(f"LeRobotVLAConfig.{key}: {directory / name} is missing" for name in missing))


PRETRAINED_FILES = ("model.safetensors",)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def _load_pretrained(model: nn.Module, lr_cfg: Any, path: Path) -> None:
    """Strictly load a LeRobot π0.5 checkpoint directory, with LeRobot's own key fixes (the dropped `lm_head`s
    excepted: LeRobot's fix copies the PaliGemma one into the token embedding first, where it is used)."""
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from safetensors.torch import load_file

    require_files(path, PRETRAINED_FILES, "pretrained_path")
    file = path / PRETRAINED_FILES[0]
    holder = PI05Policy.__new__(PI05Policy)  # only for its _fix_pytorch_state_dict_keys, which reads holder.model
    nn.Module.__init__(holder)
    holder.model = model
    fixed = holder._fix_pytorch_state_dict_keys(load_file(str(file)), lr_cfg)  # noqa: SLF001
    state = {k.removeprefix("model."): v for k, v in fixed.items()}
    state = {k: v for k, v in state.items() if not k.startswith(OUTPUT_LAYERS)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{file}: does not fit LeRobot's π0.5 (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")


def _make_tokenizer(config: LeRobotVLAConfig):  # noqa: ANN202
    """prompts -> (ids [B, L] long, mask [B, L] bool), padded to max_text_tokens like LeRobot's tokenizer step."""
    if config.tokenizer == "bytes":
        def encode(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.zeros(len(prompts), config.max_text_tokens, dtype=torch.long)
            for i, p in enumerate(prompts):
                b = p.encode("utf-8")
                if len(b) > config.max_text_tokens:
                    raise ValueError(f"task: prompt {p!r} is {len(b)} bytes, more than LeRobotVLAConfig.max_text_tokens")
                ids[i, : len(b)] = torch.tensor(list(b)) + 2
            return ids, ids != 0

        return encode
    from transformers import AutoTokenizer

    if config.tokenizer_dir is not None:
        require_files(Path(config.tokenizer_dir), TOKENIZER_FILES, "tokenizer_dir")
        tok = AutoTokenizer.from_pretrained(config.tokenizer_dir, local_files_only=True)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(config.tokenizer_name, local_files_only=True)
        except OSError:
            raise FileNotFoundError(f"LeRobotVLAConfig.tokenizer_name: {config.tokenizer_name} is not in the local "
                                    "Hugging Face cache; download it or set tokenizer_dir to a local copy") from None

    def encode_paligemma(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = tok(prompts, max_length=config.max_text_tokens, padding="max_length", truncation=False, return_tensors="pt")
        if out["input_ids"].shape[1] > config.max_text_tokens:
            raise ValueError(f"task: a prompt is longer than LeRobotVLAConfig.max_text_tokens={config.max_text_tokens}")
        return out["input_ids"], out["attention_mask"].bool()

    return encode_paligemma
