"""RLConfig: strict, typed, usable as a Hydra structured config; bad values name the field."""

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from cotrain.rl.config import RLConfig


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("gamma", 1.5, r"rl.gamma must be in \[0, 1\]"), ("clip_coef", 0.0, "rl.clip_coef must be > 0"),
     ("num_minibatches", 0, "rl.num_minibatches must be >= 1"), ("beta", -0.1, "rl.beta must be >= 0"),
     ("vf_clip_coef", -1.0, "rl.vf_clip_coef must be > 0 or None")],
)
def test_bad_values_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        RLConfig(**{field: value})


def test_structured_config_is_strict_and_validated():
    cfg = OmegaConf.structured(RLConfig)
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(cfg, {"clip_range": 0.3})  # a typo is an error, not a silently ignored key
    resolved = OmegaConf.to_object(OmegaConf.merge(cfg, {"beta": 0.0, "vf_clip_coef": None}))
    assert isinstance(resolved, RLConfig) and resolved.beta == 0.0 and resolved.vf_clip_coef is None
    with pytest.raises(ValueError, match="rl.lr must be >= 0"):
        OmegaConf.to_object(OmegaConf.merge(cfg, {"lr": -1.0}))
