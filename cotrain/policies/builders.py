"""The built-in policies: one builder per policy config class (the factory's starting registry)."""

from __future__ import annotations

from typing import Any, Callable

from cotrain.data.spec import FeatureSpec
from cotrain.policies.base import Policy
from cotrain.policies.configuration_lerobot import LeRobotVLAConfig
from cotrain.policies.configuration_vla import SmallVLAConfig
from cotrain.policies.modeling_vla import SmallVLAPolicy

Builder = Callable[[Any, FeatureSpec, Any, bool], Policy]
"""(config, spec, stats, load_pretrained) -> policy."""


def _small_vla(cfg: SmallVLAConfig, spec: FeatureSpec, stats: Any, load_pretrained: bool) -> SmallVLAPolicy:
    del load_pretrained  # trains from scratch: there are no pretrained weights to load
    return SmallVLAPolicy(cfg, spec, stats)


def _lerobot_vla(cfg: LeRobotVLAConfig, spec: FeatureSpec, stats: Any, load_pretrained: bool) -> Policy:
    from cotrain.policies.lerobot_adapter import LeRobotVLAPolicy  # imports LeRobot's model code only when asked

    return LeRobotVLAPolicy(cfg, spec, stats, load_pretrained=load_pretrained)


BUILTIN: dict[type, Builder] = {SmallVLAConfig: _small_vla, LeRobotVLAConfig: _lerobot_vla}
