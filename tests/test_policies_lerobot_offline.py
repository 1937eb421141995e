"""Offline loading of the LeRobot π0.5 adapter: a local tokenizer directory and a local LeRobot weights directory,
one error line per missing file (raised before the model is built), and a LeRobot-layout weights file (with the
`lm_head`s this adapter does not build) loaded strictly into the tiny build."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="LeRobot's π0 / π0.5 need lerobot[pi] (transformers)")

from safetensors.torch import save_file  # noqa: E402
from test_policies_support import TINY_SPEC, obs_of, stats_of, synthetic_batch  # noqa: E402

from cotrain.policies import lerobot_adapter, make_policy  # noqa: E402
from cotrain.policies.configuration_lerobot import LeRobotVLAConfig  # noqa: E402

CFG = LeRobotVLAConfig(size="tiny", image_size=32, tokenizer="bytes", max_text_tokens=160)
BATCH = synthetic_batch(n=2)


def word_tokenizer(directory: Path) -> None:
    """A small word-level fast tokenizer saved like the PaliGemma one (tokenizer.json + tokenizer_config.json)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "Task:", "pick", "up", "the", "red", "cube", "push", "blue", "to", "left"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(directory)


def test_a_local_tokenizer_directory_is_used(tmp_path):
    word_tokenizer(tmp_path / "tok")
    cfg = dataclasses.replace(CFG, tokenizer="paligemma", tokenizer_dir=str(tmp_path / "tok"))
    torch.manual_seed(0)
    policy = make_policy(cfg, TINY_SPEC, stats_of(BATCH))
    ids, mask = policy._tokenize(["Task: pick up the red cube, State: 3 4;\nAction: "])  # noqa: SLF001
    # "Task:" "pick" "up" "the" "red" → 2 3 4 5 6; "cube," "State:" "3" "4;" "Action:" are unknown words → 1
    assert ids[0, :10].tolist() == [2, 3, 4, 5, 6, 1, 1, 1, 1, 1] and mask[0].sum() == 10
    assert ids.shape == (1, cfg.max_text_tokens) and (ids[0, 10:] == 0).all()
    actions = policy.sample(obs_of(BATCH), explore=False)[0]
    assert actions.shape == (2, 4, 7) and torch.isfinite(actions).all()


def test_a_missing_tokenizer_file_is_named_one_line_each(tmp_path):
    word_tokenizer(tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").unlink()
    cfg = dataclasses.replace(CFG, tokenizer="paligemma", tokenizer_dir=str(tmp_path / "tok"))
    with pytest.raises(FileNotFoundError) as err:
        make_policy(cfg, TINY_SPEC, stats_of(BATCH))
    assert str(err.value) == f"LeRobotVLAConfig.tokenizer_dir: {tmp_path / 'tok' / 'tokenizer.json'} is missing"
    (tmp_path / "tok" / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError) as err:
        make_policy(cfg, TINY_SPEC, stats_of(BATCH))
    assert str(err.value).splitlines() == [f"LeRobotVLAConfig.tokenizer_dir: {tmp_path / 'tok' / name} is missing"
                                           for name in ("tokenizer_config.json", "tokenizer.json")]
    with pytest.raises(FileNotFoundError, match="tokenizer_dir: .*nowhere is not a directory"):
        make_policy(dataclasses.replace(cfg, tokenizer_dir=str(tmp_path / "nowhere")), TINY_SPEC, stats_of(BATCH))


def test_an_uncached_tokenizer_name_is_one_clear_error():
    cfg = dataclasses.replace(CFG, tokenizer="paligemma", tokenizer_name="cotrain-test/no-such-tokenizer")
    with pytest.raises(FileNotFoundError, match=r"^LeRobotVLAConfig.tokenizer_name: cotrain-test/no-such-tokenizer "
                                                r"is not in the local Hugging Face cache; .* set tokenizer_dir"):
        make_policy(cfg, TINY_SPEC, stats_of(BATCH))


def test_a_missing_weights_file_fails_before_the_full_build(tmp_path, monkeypatch):
    monkeypatch.setattr(lerobot_adapter, "_build_full", lambda lr_cfg: pytest.fail("built before checking files"))
    word_tokenizer(tmp_path / "tok")
    (tmp_path / "pi05").mkdir()
    (tmp_path / "pi05" / "config.json").write_text("{}")
    cfg = LeRobotVLAConfig(pretrained_path=str(tmp_path / "pi05"), tokenizer_dir=str(tmp_path / "tok"))
    with pytest.raises(FileNotFoundError) as err:
        make_policy(cfg, TINY_SPEC, stats_of(BATCH))
    assert str(err.value) == f"LeRobotVLAConfig.pretrained_path: {tmp_path / 'pi05' / 'model.safetensors'} is missing"


def test_a_lerobot_weights_file_loads_strictly_without_the_output_layers(tmp_path):
    """A file laid out like LeRobot's model.safetensors ("model." prefix, both lm_heads present) loads into the tiny
    build: every kept weight equals the file's; a missing weight is an error naming the file."""
    torch.manual_seed(0)
    source = make_policy(CFG, TINY_SPEC, stats_of(BATCH)).model
    embed = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
    # pretrained π0.5 files store the tied token embedding once, as the PaliGemma lm_head
    state = {f"model.{k}": v.contiguous() for k, v in source.state_dict().items() if k != embed}
    state["model.paligemma_with_expert.paligemma.lm_head.weight"] = torch.randn(512, 64)
    state["model.paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.randn(512, 32)
    (tmp_path / "pi05").mkdir()
    save_file(state, str(tmp_path / "pi05" / "model.safetensors"))
    torch.manual_seed(1)
    target = make_policy(CFG, TINY_SPEC, stats_of(BATCH))
    w = "paligemma_with_expert.gemma_expert.model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(target.model.state_dict()[w], source.state_dict()[w])
    lerobot_adapter._load_pretrained(target.model, target.lerobot_config, tmp_path / "pi05")  # noqa: SLF001
    loaded = target.model.state_dict()
    # LeRobot's key fix copies the PaliGemma lm_head into the token embedding, the one place it is used
    assert torch.equal(loaded[embed], state["model.paligemma_with_expert.paligemma.lm_head.weight"])
    assert all(torch.equal(v, loaded[k]) for k, v in source.state_dict().items() if k != embed)
    del state[f"model.{w}"]
    save_file(state, str(tmp_path / "pi05" / "model.safetensors"))
    with pytest.raises(ValueError, match=f"model.safetensors: does not fit LeRobot's π0.5 \\(missing \\['{w}'\\]"):
        lerobot_adapter._load_pretrained(target.model, target.lerobot_config, tmp_path / "pi05")  # noqa: SLF001
