"""Stage I gradient accumulation: `sft_step` with micro_batches > 1 makes the full batch's update (loss, gradient
norm, weights after the AdamW step) on the small VLA and on the tiny π0.5 build; the config's rules."""

from __future__ import annotations

import copy

import pytest
import torch
from test_policies_support import HEADS, TINY_SPEC, stats_of, synthetic_batch, tiny_config

from cotrain.policies import make_policy, rng
from cotrain.policies.configuration_lerobot import LeRobotVLAConfig
from cotrain.stage1 import Stage1Config, sft_step

N, PARTS = 6, 3


class RowDraws:
    """Records the random draws (flow noise, flow times) of one full-batch `sft_loss`, then serves each micro-batch
    the rows of those same draws (every draw's first dimension is the batch): both updates see the same numbers
    per row, so they can be compared exactly."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, parts: int) -> None:
        self.recorded: list[torch.Tensor] = []
        self.rows = torch.arange(N).tensor_split(parts)
        self.calls: int | None = None  # None: recording
        for name in ("randn", "rand"):
            monkeypatch.setattr(rng, name, self.wrap(getattr(rng, name)))

    def wrap(self, real):  # noqa: ANN001, ANN202
        def draw(shape, device=None, *args):  # noqa: ANN001, ANN202
            if self.calls is None:
                self.recorded.append(real(shape, device, *args))
                return self.recorded[-1]
            part, k = divmod(self.calls, len(self.recorded))
            self.calls += 1
            x = self.recorded[k][self.rows[part]]
            assert tuple(x.shape) == tuple(shape)
            return x

        return draw

    def replay(self) -> None:
        assert self.recorded, "nothing recorded"
        self.calls = 0


def policy_of(kind: str, batch: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "small_vla":
        return make_policy(tiny_config(HEADS["flow_sde"]), TINY_SPEC, stats_of(batch))
    pytest.importorskip("transformers", reason="LeRobot's π0.5 needs lerobot[pi] (transformers)")
    cfg = LeRobotVLAConfig(size="tiny", image_size=32, tokenizer="bytes", max_text_tokens=160)
    return make_policy(cfg, TINY_SPEC, stats_of(batch))


def flat(policy: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in policy.parameters()])


def flat_grad(policy: torch.nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in policy.parameters()])


@pytest.mark.parametrize("kind", ["small_vla", "pi05"])
def test_micro_batched_step_equals_the_full_batch_step(kind, monkeypatch):
    batch = synthetic_batch(n=N)
    batch["action_is_pad"][:] = False  # every row weighs 1/N in the full batch's loss, as in the parts' weights
    policy = policy_of(kind, batch)
    policy.train()
    before = flat(policy)
    draws = RowDraws(monkeypatch, PARTS)
    results = {}
    for micro in (1, PARTS):
        p = copy.deepcopy(policy)
        optimizer = torch.optim.AdamW(p.parameters(), lr=1e-3, weight_decay=1e-4)
        if micro > 1:
            draws.replay()
        loss, grad_norm = sft_step(p, optimizer, None, batch, grad_clip=1.0, step=0, micro_batches=micro)
        results[micro] = (loss, grad_norm, flat_grad(p), flat(p))
    assert draws.calls == PARTS * len(draws.recorded)  # every part drew its rows of every recorded draw
    (loss1, norm1, g1, w1), (loss3, norm3, g3, w3) = results[1], results[PARTS]
    assert not torch.equal(w1, before)
    torch.testing.assert_close(loss3, loss1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm3, norm1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g3, g1, rtol=1e-4, atol=1e-7)  # the accumulated gradient is the full batch's
    # AdamW's first step moves each weight by lr·g/(|g| + 1e-8) ≈ lr·sign(g). Where the gradient stands clear of
    # rounding (|g| ≥ 1e-6) both updates make the same step to float precision; a gradient within rounding of 0
    # (analytically 0, ~1e-10 here) may step anywhere in ±lr either way, so there only the bound holds
    clear = g1.abs() >= 1e-6
    assert clear.float().mean() > 0.5
    torch.testing.assert_close(w3[clear], w1[clear], rtol=0, atol=1e-6)
    assert (w3 - w1).abs().max() <= 2 * 1e-3 + 1e-6


def test_micro_batches_differ_from_a_single_part_when_the_draws_differ(monkeypatch):
    """The comparison above can fail: with fresh draws per part the update is a different one."""
    batch = synthetic_batch(n=N)
    policy = policy_of("small_vla", batch)
    weights = []
    for micro in (1, PARTS):
        p = copy.deepcopy(policy)
        torch.manual_seed(5)
        sft_step(p, torch.optim.AdamW(p.parameters(), lr=1e-3), None, batch, 1.0, 0, micro_batches=micro)
        weights.append(flat(p))
    assert not torch.allclose(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_micro_batches_config_rules():
    with pytest.raises(ValueError, match="micro_batches must be ≥ 1"):
        Stage1Config(micro_batches=0)
    with pytest.raises(ValueError, match="micro_batches=2 needs the plain path"):
        Stage1Config(micro_batches=2, fast=True)
    batch = synthetic_batch(n=2)
    policy = policy_of("small_vla", batch)
    with pytest.raises(ValueError, match="micro_batches=3 is more than the batch's 2 rows"):
        sft_step(policy, torch.optim.AdamW(policy.parameters()), None, batch, 1.0, 0, micro_batches=3)


def test_train_passes_micro_batches_to_every_step(tmp_path, monkeypatch):
    import cotrain.stage1 as stage1
    from test_stage1 import config, write_dataset

    write_dataset(tmp_path / "real", "real_proxy", 1, 0)
    write_dataset(tmp_path / "sim", "sim", 1, 1)
    seen = []

    def recording_step(policy, optimizer, ema, batch, grad_clip, step, micro_batches):  # noqa: ANN001, ANN202
        seen.append(micro_batches)
        return sft_step(policy, optimizer, ema, batch, grad_clip, step, micro_batches)

    monkeypatch.setattr(stage1, "sft_step", recording_step)
    stage1.train(config(tmp_path, tmp_path / "run", steps=2, save_every=2, micro_batches=4))
    assert seen == [4, 4]
