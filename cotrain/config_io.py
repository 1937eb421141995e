"""Strict mapping <-> config-dataclass conversion: the one way a typed config is read from YAML, JSON, a Hydra
container or ROS parameters (policy configs, task configs, the bridge's node parameters).

Every key must be a field of the target dataclass and every field without a default must be given (an unknown or
missing key is an error listing the known keys); values are checked against the annotations (`Literal`, `tuple`,
`list`, `dict[str, X]`, unions, nested dataclasses; no value is coerced but an int read as a float); a field typed
as a union of config classes is resolved by the `type` key of its mapping (each such class names itself in a
`type_name` ClassVar). No silent repairs. An error is one `ConfigError` (a ValueError) line naming the place: the
source (`where`, e.g. a file) and the dotted key, "configs/task/x.yaml: domains.sim.friction: expected float, got
'high' (str)".
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from cotrain.errors import ConfigError

TYPE_KEY = "type"


def config_from_dict(cls: type, data: Mapping[str, Any], where: str, key: str = "",
                     hints: Mapping[str, Any] | None = None) -> Any:
    """Build config dataclass `cls` from `data`. `where` names the source in errors (e.g. "configs/policy/x.yaml"),
    `key` the dotted key of `data` within it (empty: the top level). `hints` replaces the annotations of some of
    `cls`'s fields, e.g. {"variations": dict[str, PickPlaceVariation]} where the type depends on another value."""
    place = _place(where, key)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{place}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    field_types = get_type_hints(cls) | dict(hints or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    name = getattr(cls, "type_name", None)
    unknown = set(data) - set(fields) - ({TYPE_KEY} if name else set())
    if unknown:
        raise ConfigError(f"{place}: unknown key(s) {sorted(unknown)} for {cls.__name__}; known keys: {sorted(fields)}")
    missing = [k for k, f in fields.items() if k not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{place}: missing key(s) {missing} for {cls.__name__}")
    if name and TYPE_KEY in data and data[TYPE_KEY] != name:
        raise ConfigError(f"{_place(where, _join(key, TYPE_KEY))}: expected {name!r} for {cls.__name__}, "
                          f"got {data[TYPE_KEY]!r}")
    values = {k: v for k, v in data.items() if k != TYPE_KEY or not name}
    return cls(**{k: _convert(field_types[k], v, where, _join(key, k)) for k, v in values.items()})


def parse_value(tp: Any, value: Any, where: str) -> Any:
    """`value` checked against (and, for float, tuple and config dataclasses, converted to) type `tp`; errors
    name `where`."""
    return _convert(tp, value, where, "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Inverse of `config_from_dict`: plain JSON-able dict with a `type` key for every config class that has one."""
    out: dict[str, Any] = {}
    if getattr(cfg, "type_name", None) is not None:
        out[TYPE_KEY] = cfg.type_name
    for f in dataclasses.fields(cfg):
        out[f.name] = _to_plain(getattr(cfg, f.name))
    return out


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition`: the one-liner `__post_init__` checks use."""
    if not condition:
        raise ConfigError(message)


def _place(where: str, key: str) -> str:
    return f"{where}: {key}" if key else where


def _join(key: str, part: str) -> str:
    return f"{key}.{part}" if key else part


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(get_args(tp), value, where, key)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else config_from_dict(tp, value, where, key)
    place = _place(where, key)
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in get_args(tp)):
            raise ConfigError(f"{place}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (tuple, list):
        if not _is_list(value):
            raise ConfigError(f"{place}: expected a list, got {type(value).__name__} ({value!r})")
        args = get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [_convert(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value)]
            return items if origin is list else tuple(items)
        if len(value) != len(args):
            raise ConfigError(f"{place}: expected {len(args)} entries, got {len(value)} ({list(value)!r})")
        return tuple(_convert(a, v, where, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        key_tp, value_tp = get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{place}: expected a mapping, got {type(value).__name__} ({value!r})")
        return {_convert(key_tp, k, where, key): _convert(value_tp, v, where, _join(key, str(k)))
                for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{place}: expected {getattr(tp, '__name__', tp)}, got {value!r} ({type(value).__name__})")


def _convert_union(args: tuple[Any, ...], value: Any, where: str, key: str) -> Any:
    place = _place(where, key)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{place}: may not be null")
    configs = {a.type_name: a for a in args if dataclasses.is_dataclass(a) and getattr(a, "type_name", None)}
    if configs:
        if any(isinstance(value, a) for a in configs.values()):
            return value
        if not isinstance(value, Mapping) or TYPE_KEY not in value:
            raise ConfigError(f"{place}: expected a mapping with a '{TYPE_KEY}' key, one of {sorted(configs)}")
        if value[TYPE_KEY] not in configs:
            raise ConfigError(f"{_place(where, _join(key, TYPE_KEY))}: unknown {value[TYPE_KEY]!r}, "
                              f"expected one of {sorted(configs)}")
        return config_from_dict(configs[value[TYPE_KEY]], value, where, key)
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _convert(a, value, where, key)
        except (TypeError, ValueError) as e:  # a ConfigError, or a member's own __post_init__ check
            errors.append(str(e))
    raise ConfigError("; ".join(errors))
