"""Thread-local generators for the policies' draws (cotrain/policies/rng.py): inside `draw_from` a policy's sample
and SFT loss are functions of the context's generators, whatever other threads draw from torch's global RNG."""

from __future__ import annotations

import copy
import dataclasses
import threading

import pytest
import torch
from test_policies_support import HEADS, TINY_SPEC, obs_of, stats_of, synthetic_batch, tiny_config

from cotrain.data.spec import IMAGE_KEY
from cotrain.policies import make_policy, rng
from cotrain.policies.rng import draw_from, generator_for

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(head: str, image_shift: int = 0):
    torch.manual_seed(0)
    batch = synthetic_batch(n=4)
    image = batch[IMAGE_KEY]  # textured, not solid colours: a shifted image must differ
    batch[IMAGE_KEY] = torch.randint(0, 256, image.shape, generator=gen(0), dtype=image.dtype)
    config = dataclasses.replace(tiny_config(HEADS[head]), image_shift=image_shift)
    return make_policy(config, TINY_SPEC, stats_of(batch)), batch


def assert_same(a, b) -> None:
    actions_a, logprob_a, _, aux_a = a
    actions_b, logprob_b, _, aux_b = b
    assert torch.equal(actions_a, actions_b) and torch.equal(logprob_a, logprob_b)
    assert aux_a.keys() == aux_b.keys() and all(torch.equal(aux_a[k], aux_b[k]) for k in aux_a)


def test_generator_for_is_per_thread_nests_and_refuses_a_missing_device():
    assert generator_for("cpu") is None  # outside any context: torch's global RNG
    outer, inner = gen(0), gen(1)
    seen_by_other_thread = []
    with draw_from(outer):
        assert generator_for("cpu") is outer and generator_for(None) is outer
        with draw_from(inner):
            assert generator_for(torch.device("cpu")) is inner
        assert generator_for("cpu") is outer
        thread = threading.Thread(target=lambda: seen_by_other_thread.append(generator_for("cpu")))
        thread.start(), thread.join()
        with pytest.raises(RuntimeError, match=r"draws on cuda, but the context holds generators for \['cpu'\]"):
            generator_for("cuda")
    assert seen_by_other_thread == [None] and generator_for("cpu") is None


@pytest.mark.parametrize("head", sorted(HEADS))
def test_sample_in_a_context_depends_on_its_generator_only_and_leaves_the_global_rng_alone(head):
    policy, batch = build(head)
    obs = obs_of(batch)
    global_state = torch.get_rng_state()
    with draw_from(gen(7)):
        first = policy.sample(obs, explore=True)
    assert torch.equal(torch.get_rng_state(), global_state)
    torch.rand(3)  # moving the global RNG changes nothing inside a context
    with draw_from(gen(7)):
        again = policy.sample(obs, explore=True)
    with draw_from(gen(8)):
        other = policy.sample(obs, explore=True)
    assert_same(first, again)
    assert not torch.equal(first[0], other[0])
    # the context replaces the generator of the same draws: seeding the global RNG alike gives the same sample
    torch.manual_seed(7)
    assert_same(policy.sample(obs, explore=True), first)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_sample_outside_a_context_draws_from_the_global_rng(head):
    policy, batch = build(head)
    obs = obs_of(batch)
    torch.manual_seed(3)
    seeded = torch.get_rng_state()
    first = policy.sample(obs, explore=True)
    assert not torch.equal(torch.get_rng_state(), seeded)  # it drew from it
    torch.manual_seed(3)
    assert_same(policy.sample(obs, explore=True), first)


@pytest.mark.parametrize(("head", "image_shift"), [("flow_sde", 2), ("token", 2)])
def test_sft_loss_in_a_context_is_reproducible_from_its_generator(head, image_shift):
    policy, batch = build(head, image_shift)
    policy.train()
    global_state = torch.get_rng_state()
    with torch.no_grad():
        with draw_from(gen(5)):
            first = policy.sft_loss(batch)
        assert torch.equal(torch.get_rng_state(), global_state)
        with draw_from(gen(5)):
            again = policy.sft_loss(batch)
        losses = set()
        for seed in range(6):  # the shifts (and the flow noise and times) come from the context's generator
            with draw_from(gen(seed)):
                losses.add(policy.sft_loss(batch).item())
    assert torch.equal(first, again)
    assert len(losses) > 1


@pytest.mark.parametrize("head", ["flow_sde", "flow_noise", "token"])
def test_sampling_thread_is_unaffected_by_another_thread_drawing_from_the_global_rng(head):
    policy, batch = build(head, image_shift=2)
    learner = copy.deepcopy(policy).train()
    obs = obs_of(batch)

    def sample_in_thread(noisy: bool) -> list:
        out, stop = [], threading.Event()

        def sampler() -> None:
            with draw_from(gen(11)):
                out.extend(policy.sample(obs, explore=True) for _ in range(6))
            stop.set()

        def learner_draws() -> None:  # the learner's anchor: global-RNG noise and image shifts, as fast as it can
            with torch.no_grad():
                while not stop.is_set():
                    torch.randn(1000)
                    learner.sft_loss(batch)

        threads = [threading.Thread(target=sampler)] + ([threading.Thread(target=learner_draws)] if noisy else [])
        for t in reversed(threads):
            t.start()
        for t in threads:
            t.join()
        return out

    alone, interleaved = sample_in_thread(noisy=False), sample_in_thread(noisy=True)
    assert len(alone) == len(interleaved) == 6
    for a, b in zip(alone, interleaved):
        assert_same(a, b)
