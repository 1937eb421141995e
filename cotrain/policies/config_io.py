"""Strict dict <-> config-dataclass conversion for policy configs (YAML / JSON / Hydra containers).

Every key must be a field of the target dataclass (an unknown key is an error naming it and its path), values
are type-checked against the annotations, and a field typed as a union of config classes is resolved by the
`type` key of its dict (each config class names itself in a `type_name` ClassVar). No silent repairs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

TYPE_KEY = "type"


def config_from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build config dataclass `cls` from `data`; `where` names the source in errors (e.g. "configs/policy/x.yaml")."""
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - fields - {TYPE_KEY}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} for {cls.__name__}; known keys: {sorted(fields)}")
    name = getattr(cls, "type_name", None)
    if TYPE_KEY in data and data[TYPE_KEY] != name:
        raise ValueError(f"{where}.{TYPE_KEY}: expected {name!r} for {cls.__name__}, got {data[TYPE_KEY]!r}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items() if k != TYPE_KEY}
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Inverse of `config_from_dict`: plain JSON-able dict with a `type` key for every config class that has one."""
    out: dict[str, Any] = {}
    if getattr(cfg, "type_name", None) is not None:
        out[TYPE_KEY] = cfg.type_name
    for f in dataclasses.fields(cfg):
        out[f.name] = _to_plain(getattr(cfg, f.name))
    return out


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(get_args(tp), value, where)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else config_from_dict(tp, value, where)
    if origin is Literal:
        if value not in get_args(tp):
            raise ValueError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp, *_rest) = get_args(tp)
        return tuple(_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise TypeError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__} ({value!r})")


def _convert_union(args: tuple[Any, ...], value: Any, where: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise TypeError(f"{where}: may not be null")
    configs = {getattr(a, "type_name", None): a for a in args if dataclasses.is_dataclass(a)}
    if configs:
        if any(isinstance(value, a) for a in configs.values()):
            return value
        if not isinstance(value, dict) or TYPE_KEY not in value:
            raise ValueError(f"{where}: expected a mapping with a '{TYPE_KEY}' key, one of {sorted(configs)}")
        if value[TYPE_KEY] not in configs:
            raise ValueError(f"{where}.{TYPE_KEY}: unknown {value[TYPE_KEY]!r}, expected one of {sorted(configs)}")
        return config_from_dict(configs[value[TYPE_KEY]], value, where)
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _convert(a, value, where)
        except (TypeError, ValueError) as e:
            errors.append(str(e))
    raise TypeError("; ".join(errors))


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless `condition`: the one-liner `__post_init__` checks use."""
    if not condition:
        raise ValueError(message)
