"""The one strict config parser (`cotrain.config_io`): mappings of configs, lists, a per-call type override, and
one-line errors naming the source and the dotted key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cotrain.config_io import config_from_dict, config_to_dict
from cotrain.errors import ConfigError


@dataclass(frozen=True)
class Cube:
    edge: float
    xy: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Ball:
    radius: float


@dataclass(frozen=True)
class Scene:
    objects: dict[str, Cube | Ball]
    """Which kind the objects are depends on the scene (the caller narrows it with `hints`)."""
    weights: list[float] = field(default_factory=list)


def test_dict_values_lists_and_a_type_override():
    data = {"objects": {"left": {"radius": 1}, "right": {"radius": 0.5}}, "weights": [1, 2.5]}
    scene = config_from_dict(Scene, data, "s.yaml", hints={"objects": dict[str, Ball]})
    assert scene == Scene({"left": Ball(1.0), "right": Ball(0.5)}, [1.0, 2.5])
    assert type(scene.objects["left"].radius) is float and type(scene.weights[0]) is float  # ints read as floats
    assert config_to_dict(scene) == {"objects": {"left": {"radius": 1.0}, "right": {"radius": 0.5}},
                                     "weights": [1.0, 2.5]}

    cube = {"objects": {"c": {"edge": 0.04, "xy": [0.1, -0.2]}}}
    assert config_from_dict(Scene, cube, "s.yaml").objects["c"] == Cube(0.04, (0.1, -0.2))  # the annotation's union
    with pytest.raises(ConfigError) as e:  # the override, not the annotation, decides
        config_from_dict(Scene, cube, "s.yaml", hints={"objects": dict[str, Ball]})
    assert str(e.value) == "s.yaml: objects.c: unknown key(s) ['edge', 'xy'] for Ball; known keys: ['radius']"


@pytest.mark.parametrize("data,error", [
    ({}, "s.yaml: missing key(s) ['objects'] for Scene"),
    ({"objects": {"b": {"radius": "big"}}}, "s.yaml: objects.b.radius: expected float, got 'big' (str)"),
    ({"objects": {}, "weights": [1.0, True]}, "s.yaml: weights[1]: expected float, got True (bool)"),
    ({"objects": {}, "weights": 1.0}, "s.yaml: weights: expected a list, got float (1.0)"),
    ({"objects": {1: {"radius": 1.0}}}, "s.yaml: objects: expected str, got 1 (int)"),
])
def test_errors_are_one_line_naming_file_and_key(data, error):
    with pytest.raises(ConfigError) as e:
        config_from_dict(Scene, data, "s.yaml", hints={"objects": dict[str, Ball]})
    assert str(e.value) == error


def test_fixed_length_tuples_are_checked():
    with pytest.raises(ConfigError) as e:
        config_from_dict(Cube, {"edge": 0.04, "xy": [0.1, 0.2, 0.3]}, "c.yaml", key="objects.c")
    assert str(e.value) == "c.yaml: objects.c.xy: expected 2 entries, got 3 ([0.1, 0.2, 0.3])"
