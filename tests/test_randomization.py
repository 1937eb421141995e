"""Domain randomisation around a calibrated domain (cotrain.calibration.randomization)."""

import dataclasses

import pytest

from cotrain.calibration.randomization import RandomizationRanges, sample_domain
from cotrain.envs.config import ConfigError, load_task_config

TWIN = load_task_config("pick_place").domain("sim")  # stands for a calibrated twin domain
WIDE = RandomizationRanges(light_scale=0.2, color=0.05, camera_eye=0.01, camera_target=0.01, friction=0.3,
                           mass_scale=0.3, latency_steps=1)


def test_zero_width_is_the_calibrated_domain():
    assert sample_domain(TWIN, RandomizationRanges(), seed=7) == TWIN
    assert sample_domain(TWIN, RandomizationRanges(distribution="triangular"), seed=7) == TWIN
    assert RandomizationRanges().is_zero and RandomizationRanges(distribution="triangular").is_zero
    assert not any(dataclasses.replace(RandomizationRanges(), **{f.name: getattr(WIDE, f.name)}).is_zero
                   for f in dataclasses.fields(RandomizationRanges) if f.name != "distribution")


def test_reproducible_from_the_seed():
    assert sample_domain(TWIN, WIDE, 3) == sample_domain(TWIN, WIDE, 3)
    assert sample_domain(TWIN, WIDE, 3) != sample_domain(TWIN, WIDE, 4)


@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(RandomizationRanges) if f.name != "distribution"])
def test_every_range_key_is_read(key):
    """Widening one range alone changes the sample (for some seed of the first few)."""
    wide = dataclasses.replace(RandomizationRanges(), **{key: getattr(WIDE, key)})
    assert any(sample_domain(TWIN, wide, s) != TWIN for s in range(5))


def test_distribution_is_read():
    tri = dataclasses.replace(WIDE, distribution="triangular")
    assert sample_domain(TWIN, tri, 0) != sample_domain(TWIN, WIDE, 0)


def test_samples_stay_in_their_ranges():
    for seed in range(20):
        d = sample_domain(TWIN, WIDE, seed)
        assert 0.7 * TWIN.friction <= d.friction <= 1.3 * TWIN.friction
        assert 0.7 * TWIN.mass_scale <= d.mass_scale <= 1.3 * TWIN.mass_scale
        assert all(abs(a - b) <= 0.01 for a, b in zip(d.camera_eye_offset, TWIN.camera_eye_offset))
        assert d.action_latency_steps in (0, 1)  # 0 + [-1, 1], at least 0
        assert d.ambient_light[0] / TWIN.ambient_light[0] == pytest.approx(d.light_color[0] / TWIN.light_color[0])


def test_bad_ranges_are_one_config_error():
    with pytest.raises(ConfigError, match="randomization.friction must be >= 0"):
        RandomizationRanges(friction=-0.1)
    with pytest.raises(ConfigError, match="randomization.mass_scale is relative"):
        RandomizationRanges(mass_scale=1.0)
    with pytest.raises(ConfigError, match="distribution"):
        RandomizationRanges(distribution="gaussian")
