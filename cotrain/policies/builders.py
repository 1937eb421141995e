"""Registration of the built-in policies with the factory (one line per policy)."""

from __future__ import annotations

from typing import Any

from cotrain.data.spec import FeatureSpec
from cotrain.policies.configuration_lerobot import LeRobotVLAConfig
from cotrain.policies.configuration_vla import SmallVLAConfig
from cotrain.policies.factory import register_policy
from cotrain.policies.modeling_vla import SmallVLAPolicy


@register_policy(SmallVLAConfig)
def _small_vla(cfg: SmallVLAConfig, spec: FeatureSpec, stats: Any, load_pretrained: bool) -> SmallVLAPolicy:
    del load_pretrained  # trains from scratch: there are no pretrained weights to load
    return SmallVLAPolicy(cfg, spec, stats)



@register_policy(LeRobotVLAConfig)
def _lerobot_vla(cfg: LeRobotVLAConfig, spec: FeatureSpec, stats: Any, load_pretrained: bool):  # noqa: ANN202
    from cotrain.policies.lerobot_adapter import LeRobotVLAPolicy  # imports LeRobot's model code only when asked

    return LeRobotVLAPolicy(cfg, spec, stats, load_pretrained=load_pretrained)
