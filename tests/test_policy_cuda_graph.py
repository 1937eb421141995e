"""Sampling split into noise draws + a deterministic core, and the CUDA-graph replay of that core
(cotrain/policies/cuda_graph.py). CPU tests check the split and the sampling distributions; the CUDA tests (skipped
without a GPU) check graphed == eager, weight updates, recapture, streams and the cache limit."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from test_policies_support import HEADS, TINY_SPEC, obs_of, stats_of, synthetic_batch, tiny_config

from cotrain.data.spec import IMAGE_KEY, STATE_KEY, TASK_KEY
from cotrain.policies import (
    load_policy, make_policy, policy_config_from_dict, policy_config_to_dict, rng, save_checkpoint,
)
from cotrain.policies.action_head import Context, HeadShape
from cotrain.policies.configuration_vla import TokenHeadConfig
from cotrain.policies.cuda_graph import GraphedSampler
from cotrain.policies.token_head import TokenHead, gumbel_noise

pytestmark = pytest.mark.usefixtures("one_thread")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def build(head: str, n: int = 4, device: str = "cpu"):
    torch.manual_seed(0)
    batch = synthetic_batch(n=n)
    return make_policy(tiny_config(HEADS[head]), TINY_SPEC, stats_of(batch)).to(device), obs_of(batch)


@contextmanager
def seeded(seed: int, device: str = "cpu"):
    accel = torch.Generator(device).manual_seed(seed) if device != "cpu" else None
    with rng.draw_from(torch.Generator().manual_seed(seed), accel):
        yield


def core_of(policy, obs, explore: bool):
    """What `sample` feeds its core: device inputs, and the head's noise drawn inside the caller's context."""
    image, state, ids, has_pad = policy._device_inputs(obs)
    noise = policy.head.draw_noise(image.shape[0], policy.device, explore)
    return dict(image=image, state=state, ids=ids, noise=noise), dict(has_pad=has_pad, explore=explore)


def assert_outputs_equal(a, b, atol: float = 0.0) -> None:
    for x, y in zip(a[:3], b[:3]):
        torch.testing.assert_close(x, y, atol=atol, rtol=0, equal_nan=True)
    assert a[3].keys() == b[3].keys()
    for k in a[3]:
        torch.testing.assert_close(a[3][k], b[3][k], atol=atol, rtol=0)


# ---------------------------------------------------------------- CPU: the split and the distributions


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("explore", [True, False])
def test_sample_core_equals_sample_bit_for_bit(head, explore):
    policy, obs = build(head)
    with torch.no_grad(), seeded(3):
        inputs, static = core_of(policy, obs, explore)
        core = policy._sample_core(**inputs, **static)
    with seeded(3):
        sampled = policy.sample(obs, explore=explore)
    assert_outputs_equal(core, sampled)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_core_is_deterministic_given_the_noise_and_follows_it(head):
    policy, obs = build(head)
    with torch.no_grad():
        with seeded(1):
            inputs, static = core_of(policy, obs, explore=True)
        first, again = policy._sample_core(**inputs, **static), policy._sample_core(**inputs, **static)
        with seeded(2):
            other_inputs, _ = core_of(policy, obs, explore=True)
        other = policy._sample_core(**other_inputs, **static)
    assert_outputs_equal(first, again)
    assert not torch.equal(first[0], other[0])


def test_flow_noise_draws():
    """Flow-SDE: x0, eps ~ N(0, 1), exactly one stochastic step per sample, uniform over the K steps; Flow-Noise:
    every step; explore=False: x0 = 0 (eval_init="zero"), no stochastic step and no eps."""
    sde, _ = build("flow_sde")
    with seeded(0):
        noise = sde.head.draw_noise(4000, torch.device("cpu"), explore=True)
    assert noise["x0"].shape == (4000, 4, 7) and noise["eps"].shape == (4000, 4, 4, 7)
    for x in (noise["x0"], noise["eps"]):
        assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02
    assert noise["stochastic"].sum(dim=1).tolist() == [1] * 4000
    freq = noise["stochastic"].float().mean(dim=0)  # each step with probability 1/4: std 0.007
    torch.testing.assert_close(freq, torch.full((4,), 0.25), atol=0.03, rtol=0)
    flow_noise, _ = build("flow_noise")
    with seeded(0):
        assert flow_noise.head.draw_noise(3, torch.device("cpu"), explore=True)["stochastic"].all()
        det = sde.head.draw_noise(3, torch.device("cpu"), explore=False)
    assert det.keys() == {"x0", "stochastic"} and not det["x0"].any() and not det["stochastic"].any()


def test_flow_chain_sample_keeps_the_adapters_signature():
    """`FlowChain.sample(velocity, batch, device, explore)` (the LeRobot adapter's call) = draw_noise + denoise."""
    policy, obs = build("flow_sde")
    chain = policy.head.chain
    with torch.no_grad():
        memory = policy.head.memory(policy.encode(obs))
        velocity = lambda x, t: policy.head.velocity(memory, x, t)  # noqa: E731
        with seeded(5):
            legacy = chain.sample(velocity, 4, torch.device("cpu"), True)
        with seeded(5):
            split = chain.denoise(velocity, True, chain.draw_noise(4, torch.device("cpu"), True))
    assert torch.equal(legacy[0], split[0]) and torch.equal(legacy[1], split[1])
    assert torch.equal(legacy[2]["chain"], split[2]["chain"])


def test_gumbel_max_token_sampling_matches_the_softmax():
    """Tokens = argmax(logits + g), g = −log(−log u): frequencies over 24 000 draws match softmax(logits), and the
    logprob is the sum of the drawn tokens' log-probabilities."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    head = TokenHead(TokenHeadConfig(n_bins=4, n_layers=1), HeadShape(8, 2, 1, chunk_size=2, action_dim=3))
    head.logits = lambda ctx: probs.log().expand(ctx.tokens.shape[0], 2, 3, 4)  # the decoder is not the point
    ctx = Context(tokens=torch.zeros(4000, 1, 8), pad_mask=None, pooled=torch.zeros(4000, 8))
    with seeded(0):
        noise = head.draw_noise(4000, torch.device("cpu"), explore=True)
    actions, logprob, aux = head.sample(ctx, True, noise)
    freq = torch.bincount(aux["tokens"].flatten(), minlength=4).float() / aux["tokens"].numel()
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)  # binomial std <= 0.0033
    torch.testing.assert_close(logprob, probs.log()[aux["tokens"]].flatten(1).sum(1))
    assert torch.equal(actions, -1 + (aux["tokens"].float() + 0.5) * 0.5)  # bin centres of 4 bins
    greedy = head.sample(ctx, False, head.draw_noise(4000, torch.device("cpu"), explore=False))[2]["tokens"]
    assert (greedy == 0).all()


def test_gumbel_noise_is_finite_at_the_ends_of_the_unit_interval():
    g = gumbel_noise(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.isfinite(g).all()
    assert g[1].item() == pytest.approx(-math.log(math.log(2)))


def test_cpu_sample_never_uses_graphs(monkeypatch):
    policy, obs = build("flow_sde")

    def refuse(*args, **kwargs):
        raise AssertionError("GraphedSampler called on CPU")

    monkeypatch.setattr(GraphedSampler, "__call__", refuse)
    assert policy.config.cuda_graphs and not GraphedSampler.usable(policy)
    policy.sample(obs, explore=True)
    assert policy.graphs.captures == 0


def test_a_copy_of_the_policy_starts_with_an_empty_graph_cache():
    policy, _ = build("flow_sde")
    policy.graphs.captures = 3  # stands in for a used cache
    clone = copy.deepcopy(policy)
    assert clone.graphs is not policy.graphs and clone.graphs.captures == 0 and clone.graphs.graphs == {}


def test_configs_and_checkpoints_without_cuda_graphs_still_load(tmp_path):
    """Policy configs written before `cuda_graphs` existed get its default."""
    policy, obs = build("flow_sde")
    old = policy_config_to_dict(policy.config)
    del old["cuda_graphs"]
    assert policy_config_from_dict(old).cuda_graphs is True
    ckpt = save_checkpoint(tmp_path / "ckpt", policy)
    (ckpt / "policy_config.json").write_text(json.dumps(old))
    loaded = load_policy(ckpt)
    assert loaded.config.cuda_graphs is True
    assert torch.equal(loaded.sample(obs, explore=False)[0], policy.sample(obs, explore=False)[0])


# ---------------------------------------------------------------- CUDA: graphed vs eager


def sample_pair(policy, obs, explore: bool, seed: int = 0):
    """(graphed, eager) samples from the same generators."""
    with seeded(seed, "cuda"):
        graphed = policy.sample(obs, explore=explore)
    config = policy.config
    policy.config = dataclasses.replace(config, cuda_graphs=False)
    try:
        with seeded(seed, "cuda"):
            eager = policy.sample(obs, explore=explore)
    finally:
        policy.config = config
    return graphed, eager


def rows(obs: dict, n: int) -> dict:
    return {IMAGE_KEY: obs[IMAGE_KEY][:n], STATE_KEY: obs[STATE_KEY][:n], TASK_KEY: obs[TASK_KEY][:n]}


@cuda
@pytest.mark.parametrize("head", sorted(HEADS))
def test_graphed_sample_equals_eager(head):
    policy, obs = build(head, n=8, device="cuda")
    keys = set()
    for n in (1, 3, 8):  # batch 1 has one instruction (no text padding), the others two lengths (padding)
        for explore in (True, False):
            graphed, eager = sample_pair(policy, rows(obs, n), explore, seed=n)
            assert_outputs_equal(graphed, eager, atol=1e-5)
            keys.add((n, explore))
    assert policy.graphs.captures == len(keys) == len(policy.graphs.graphs)
    again, eager = sample_pair(policy, obs, True, seed=99)  # a cached graph, new noise
    assert_outputs_equal(again, eager, atol=1e-5)
    assert policy.graphs.captures == len(keys)


@cuda
def test_graphs_follow_in_place_weight_updates():
    policy, obs = build("flow_sde", n=4, device="cuda")
    before, _ = sample_pair(policy, obs, True)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    policy.sft_loss(synthetic_batch(n=4)).backward()
    optimizer.step()
    after, eager = sample_pair(policy, obs, True)
    assert_outputs_equal(after, eager, atol=1e-5)
    assert not torch.allclose(after[0], before[0])
    other, _ = build("flow_sde", n=4, device="cuda")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn_like(p))
    policy.load_state_dict(other.state_dict())
    loaded, eager = sample_pair(policy, obs, True)
    assert_outputs_equal(loaded, eager, atol=1e-5)
    assert policy.graphs.captures == 1  # all of it through the one graph


@cuda
def test_replaced_or_moved_parameters_trigger_a_recapture():
    policy, obs = build("token", n=4, device="cuda")
    sample_pair(policy, obs, False)
    assert policy.graphs.captures == 1
    policy.value_head[2].weight = nn.Parameter(torch.randn_like(policy.value_head[2].weight))
    graphed, eager = sample_pair(policy, obs, False)
    assert policy.graphs.captures == 2
    assert_outputs_equal(graphed, eager, atol=1e-5)
    policy.cpu().cuda()
    graphed, eager = sample_pair(policy, obs, False)
    assert policy.graphs.captures == 3
    assert_outputs_equal(graphed, eager, atol=1e-5)


@cuda
def test_graphed_sample_on_a_side_stream_and_the_cache_limit():
    policy, obs = build("flow_noise", n=4, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        graphed, eager = sample_pair(policy, obs, True)
    torch.cuda.synchronize()
    assert_outputs_equal(graphed, eager, atol=1e-5)
    policy.graphs.max_graphs = 1
    with pytest.warns(UserWarning, match="run eagerly"):
        graphed, eager = sample_pair(policy, rows(obs, 2), True)
    assert_outputs_equal(graphed, eager, atol=1e-5)
    assert policy.graphs.captures == 1


@cuda
def test_a_capture_in_one_thread_beside_a_learner_drawing_from_its_own_generator():
    """Stage II captures graphs in the rollout thread while the learner's anchor draws flow noise in the main
    thread. A capture claims torch's default CUDA generator, so the learner draws from its own (PPOTrainer's
    device_generator, entered as here): no "Offset increment outside graph capture" error."""
    import threading

    policy, obs = build("flow_sde", n=8, device="cuda")
    learner = copy.deepcopy(policy).train()
    batch = synthetic_batch(n=8)
    errors, stop = [], threading.Event()

    def learn():
        try:
            with rng.draw_from(None, torch.Generator("cuda").manual_seed(0)):
                while not stop.is_set():
                    learner.sft_loss(batch).backward()
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    thread = threading.Thread(target=learn)
    thread.start()
    try:
        with seeded(0, "cuda"):
            for n in range(1, 9):  # a new batch size: a new capture each time
                policy.sample(rows(obs, n), explore=True)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert policy.graphs.captures == 8

