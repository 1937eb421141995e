"""EMA of weights: hand-worked averages, warm-up ramp, swap in/out, and Stage I checkpoints holding the average."""

import pytest
import torch
from torch import nn

from cotrain.ema import EMA, ema_decay_at


def test_decay_ramp_hand_worked():
    assert ema_decay_at(0, 0.999) == pytest.approx(1 / 10)
    assert ema_decay_at(10, 0.999) == pytest.approx(11 / 20)
    assert ema_decay_at(10_000, 0.999) == 0.999


def test_update_is_the_polyak_average():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # d_0 = min(0.5, 1/10) = 0.1 → 0.1·1 + 0.9·3 = 2.8
    assert ema.shadow["weight"].item() == pytest.approx(2.8)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema.update(model)  # d_1 = min(0.5, 2/11) = 2/11 → 2.8·2/11 = 0.50909…
    assert ema.shadow["weight"].item() == pytest.approx(2.8 * 2 / 11)


def test_swapped_in_restores_the_online_weights():
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    trained = model.weight.detach().clone()
    with ema.swapped_in(model) as online:
        assert torch.equal(model.weight, ema.shadow["weight"])
        assert torch.equal(online["weight"], trained)
    assert torch.equal(model.weight, trained)


def test_load_state_dict_refuses_another_model():
    ema = EMA(nn.Linear(2, 2), decay=0.9)
    with pytest.raises(ValueError, match="other tensors"):
        ema.load_state_dict(EMA(nn.Linear(2, 2, bias=False), decay=0.9).state_dict())


def test_every_float_tensor_is_averaged_and_integer_buffers_are_copied():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))  # floats: weights, biases, running stats; int: count
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    model[1].running_mean.fill_(5.0)  # was 0
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)  # d_0 = 0.1: parameters 0.1·1 + 0.9·3 = 2.8; running_mean 0.9·5 = 4.5
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.allclose(ema.shadow[name], torch.full_like(ema.shadow[name], 2.8))
    assert torch.allclose(ema.shadow["1.running_mean"], torch.full((2,), 4.5))
    assert ema.shadow["1.num_batches_tracked"].item() == 7


def test_update_counted_is_update_with_the_count_in_a_tensor():
    """d_t from a tensor count (what a CUDA graph replays) gives the same average as the host count: d = 0.1, 2/11."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    host, counted = EMA(model, 0.9), EMA(model, 0.9)
    count = torch.tensor(0)
    for _ in range(2):
        with torch.no_grad():
            model.weight.add_(1.0)
        host.update(model)
        counted.update_counted(model, count)
    assert int(count) == 2 and host.updates == 2
    assert all(torch.equal(host.shadow[k], counted.shadow[k]) for k in host.shadow)
    # from w: s1 = 0.1·w + 0.9·(w+1) = w + 0.9; s2 = (2/11)(w + 0.9) + (9/11)(w + 2) = w + 1.8 = weight − 0.2
    assert torch.allclose(counted.shadow["weight"], model.weight - 0.2, atol=1e-6)
