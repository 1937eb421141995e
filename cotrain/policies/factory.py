"""Building a policy from its config: a registry keyed by config class (no model-name chains).

    cfg = policy_config_from_dict(yaml_dict, where="configs/policy/vla_flow.yaml")
    policy = make_policy(cfg, spec, stats)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cotrain.config_io import TYPE_KEY, config_from_dict, config_to_dict
from cotrain.data.spec import FeatureSpec
from cotrain.policies.base import Policy
from cotrain.policies.builders import BUILTIN, Builder

POLICIES: dict[type, Builder] = {}


def register_policy(config_cls: type) -> Callable[[Builder], Builder]:
    """Decorator adding a policy (its config class and builder) to the registry."""

    def deco(builder: Builder) -> Builder:
        if config_cls in POLICIES:
            raise ValueError(f"policy config {config_cls.__name__} is already registered")
        if not getattr(config_cls, "type_name", None):
            raise ValueError(f"policy config {config_cls.__name__} needs a `type_name` ClassVar")
        POLICIES[config_cls] = builder
        return builder

    return deco


for _cls, _builder in BUILTIN.items():
    register_policy(_cls)(_builder)


def make_policy(cfg: Any, spec: FeatureSpec, stats: Any, *, load_pretrained: bool = True) -> Policy:
    """Build the policy `cfg` describes. `load_pretrained=False` skips pretrained weights a config points at
    (used when a checkpoint's own weights are loaded right after)."""
    if type(cfg) not in POLICIES:
        raise KeyError(f"no policy registered for config {type(cfg).__name__}; registered: {[c.__name__ for c in POLICIES]}")
    return POLICIES[type(cfg)](cfg, spec, stats, load_pretrained)


def policy_config_from_dict(data: dict[str, Any], where: str = "policy") -> Any:
    """The policy config a dict describes, chosen by its `type` key; unknown keys and wrong types are errors."""
    by_name = {c.type_name: c for c in POLICIES}
    if not isinstance(data, Mapping) or TYPE_KEY not in data:
        raise ValueError(f"{where}: a policy config needs a '{TYPE_KEY}' key, one of {sorted(by_name)}")
    if data[TYPE_KEY] not in by_name:
        raise ValueError(f"{where}: {TYPE_KEY}: unknown policy {data[TYPE_KEY]!r}, expected one of {sorted(by_name)}")
    return config_from_dict(by_name[data[TYPE_KEY]], data, where)


def policy_config_to_dict(cfg: Any) -> dict[str, Any]:
    return config_to_dict(cfg)
