"""Calibration's pure functions: latency, greenscreen, object colours, overlays (small synthetic data)."""

import numpy as np
import pytest
from PIL import Image

from cotrain.calibration.colors import erode, object_color
from cotrain.calibration.errors import CalibrationError
from cotrain.calibration.greenscreen import composite, median_background
from cotrain.calibration.latency import estimate_latency, lag_correlation
from cotrain.calibration.overlay import blend, write_overlay


def lagged_episode(rng, latency, steps=40, gain=0.8):
    """Commands a_t and positions with p_{t+1} = p_t + gain·a_{t−latency} (zeros before the first command)."""
    a = rng.uniform(-0.02, 0.02, size=(steps, 7))
    executed = np.concatenate([np.zeros((latency, 7)), a])[:steps]
    p = np.concatenate([np.zeros((1, 3)), np.cumsum(gain * executed[:, :3], axis=0)])[:steps]
    return a, np.concatenate([p, np.zeros((steps, 5))], axis=1)


@pytest.mark.parametrize("latency", [0, 1, 3])
def test_latency_is_exact_for_integer_steps(latency):
    rng = np.random.default_rng(latency)
    episodes = [lagged_episode(rng, latency) for _ in range(3)]
    est = estimate_latency([a for a, _ in episodes], [p for _, p in episodes], max_lag=5)
    assert est.steps == latency
    assert est.residual == pytest.approx(0.0, abs=1e-9)  # the response is an exact scaled copy
    assert max(c for k, c in enumerate(est.correlations) if k != latency) < 0.5


def test_lag_correlation_by_hand():
    # one episode: commands x = [1, 0, 2], positions x = [0, 0, 1]: displacements [0, 1]
    a = np.array([[1.0, 0, 0], [0, 0, 0], [2, 0, 0]])
    p = np.array([[0.0, 0, 0], [0, 0, 0], [1, 0, 0]])
    # lag 0: pairs (a0, dp0)=(1, 0), (a1, dp1)=(0, 1): dot 0 ; lag 1: (a0, dp1) = (1, 1): 1/sqrt(1*1) = 1
    assert lag_correlation([a], [p], 0) == 0.0
    assert lag_correlation([a], [p], 1) == pytest.approx(1.0)


def test_latency_bad_input_is_one_error():
    with pytest.raises(CalibrationError, match="same number"):
        estimate_latency([], [])
    with pytest.raises(CalibrationError, match="episode 0"):
        estimate_latency([np.zeros((5, 7))], [np.zeros((4, 8))])
    with pytest.raises(CalibrationError, match="episode 0"):
        estimate_latency([np.zeros((5, 7))], [np.zeros((5,))])  # a dataset without states


def test_median_background_removes_noise_and_a_passer_by():
    frames = np.full((5, 4, 4, 3), 100, dtype=np.uint8)
    frames[0] = 250  # someone walks through one frame
    frames[1, 0, 0] = 90
    frames[2, 0, 0] = 110
    bg = median_background(frames, 4, 4)
    assert (bg == 100).all()


def test_background_bad_frames_are_one_error():
    with pytest.raises(CalibrationError, match="no frames"):
        median_background(np.zeros((0, 4, 4, 3), np.uint8), 4, 4)
    with pytest.raises(CalibrationError, match=r"\[N, 4, 4, 3\].*\[2, 8, 8, 3\]"):
        median_background(np.zeros((2, 8, 8, 3), np.uint8), 4, 4)
    with pytest.raises(CalibrationError, match="uint8"):
        median_background(np.zeros((2, 4, 4, 3), np.float32), 4, 4)


def test_composite_is_the_background_wherever_nothing_is_rendered():
    rng = np.random.default_rng(0)
    render = rng.integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    keep = rng.random((2, 6, 5)) < 0.4
    out = composite(render, keep, bg)
    assert np.array_equal(out[~keep], np.broadcast_to(bg, render.shape)[~keep])
    assert np.array_equal(out[keep], render[keep])
    with pytest.raises(CalibrationError, match="do not match"):
        composite(render, keep, bg[:4])


def test_object_color_is_the_median_inside_the_eroded_mask():
    frame = np.zeros((1, 7, 7, 3), dtype=np.uint8)
    mask = np.zeros((1, 7, 7), dtype=bool)
    mask[0, 1:6, 1:6] = True  # 5x5 object; eroded: the inner 3x3
    frame[0, 1:6, 1:6] = (204, 51, 102)  # 0.8, 0.2, 0.4
    frame[0, 1, 1:6] = (255, 255, 255)  # a bright edge (a highlight or misaligned pixel) is eroded away
    frame[0, 3, 3] = (0, 0, 0)  # one dark pixel inside does not move the median
    rgb, spread = object_color(frame, mask)
    assert rgb == pytest.approx((0.8, 0.2, 0.4))
    assert spread == 0.0
    assert erode(mask[0]).sum() == 9
    with pytest.raises(CalibrationError, match="only 0 pixels"):
        object_color(frame, np.zeros_like(mask), "tray")


def test_overlay_blend_and_png(tmp_path):
    real = np.full((2, 2, 3), 100, np.uint8)
    render = np.full((2, 2, 3), 201, np.uint8)
    assert (blend(real, render) == 150).all()  # (100 + 201) / 2 = 150.5 -> round half to even -> 150
    assert (blend(real, render, alpha=0.0) == 100).all()
    path = write_overlay(tmp_path / "o" / "before.png", real, render)
    assert np.array_equal(np.asarray(Image.open(path)), blend(real, render))
    assert [p.name for p in path.parent.iterdir()] == ["before.png"]


def lag_episode(rng, beta, gain, latency, steps=60):
    """Δp_t = beta·Δp_{t−1} + gain·a_{t−latency}, positions integrated from 0."""
    a = rng.uniform(-0.02, 0.02, size=(steps, 7))
    dp = np.zeros((steps, 3))
    for t in range(steps):
        prev = dp[t - 1] if t else 0.0
        cmd = a[t - latency, :3] if t >= latency else 0.0
        dp[t] = beta * prev + gain * cmd
    p = np.concatenate([np.zeros((1, 3)), np.cumsum(dp, axis=0)])[:steps]
    return a, np.concatenate([p, np.zeros((steps, 5))], axis=1)


def test_response_recovers_the_lag_and_gain():
    from cotrain.calibration.response import estimate_response

    rng = np.random.default_rng(0)
    episodes = [lag_episode(rng, 0.5, 0.9, 1) for _ in range(3)]
    est = estimate_response([a for a, _ in episodes], [p for _, p in episodes], latency=1, dt=0.1)
    assert est.beta == pytest.approx(0.5, abs=1e-9) and est.gain == pytest.approx(0.9, abs=1e-9)
    assert est.time_constant == pytest.approx(0.1 / np.log(2))  # τ = −dt/ln β = 0.1443 s
    assert est.residual == pytest.approx(0.0, abs=1e-12)
    no_lag = [lag_episode(rng, 0.0, 1.0, 0) for _ in range(2)]
    est = estimate_response([a for a, _ in no_lag], [p for _, p in no_lag], latency=0)
    assert est.beta == pytest.approx(0.0, abs=1e-9) and est.time_constant == 0.0


def test_response_bad_input_is_one_error():
    from cotrain.calibration.response import estimate_response

    with pytest.raises(CalibrationError, match="same number"):
        estimate_response([], [], 0)
    with pytest.raises(CalibrationError, match="episode 0"):
        estimate_response([np.zeros((5, 7))], [np.zeros((5,))], 0)  # a dataset without states
    with pytest.raises(CalibrationError, match="too short"):
        estimate_response([np.zeros((2, 7))], [np.zeros((2, 8))], 1)
