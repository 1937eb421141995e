"""Arm backends behind one interface: `franky` (a Franka or franky-sim) and `twin` (the ManiSkill real-proxy env).

`BACKENDS` maps `franka.backend` to a `BackendKind`: how to build it (imported lazily: franky and ManiSkill are
optional) and what it brings besides the arm — the twin renders the camera frames itself, so a graph on the twin
starts no camera node and the franka node publishes the frames."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from robot_bridge.backends.base import ArmBackend, ArmReading
from robot_bridge.params import FrankaParams


def _franky(p: FrankaParams) -> ArmBackend:
    from robot_bridge.backends.franky_backend import FrankyBackend

    return FrankyBackend(p)


def _twin(p: FrankaParams) -> ArmBackend:
    from robot_bridge.backends.twin_backend import TwinBackend

    return TwinBackend(p)


@dataclass(frozen=True)
class BackendKind:
    build: Callable[[FrankaParams], ArmBackend]
    provides_camera: bool
    """The backend renders the camera frames (the franka node publishes them; no camera node is started)."""
    simulated_scene: bool
    """The arm and the task objects are a simulation this process can read (a scripted operator can act on it)."""


BACKENDS: dict[str, BackendKind] = {
    "franky": BackendKind(_franky, provides_camera=False, simulated_scene=False),
    "twin": BackendKind(_twin, provides_camera=True, simulated_scene=True),
}


def backend_kind(name: str) -> BackendKind:
    if name not in BACKENDS:
        raise ValueError(f"franka.backend={name!r}: expected one of {sorted(BACKENDS)}")
    return BACKENDS[name]


def make_backend(p: FrankaParams) -> ArmBackend:
    return backend_kind(p.backend).build(p)


__all__ = ["ArmBackend", "ArmReading", "BackendKind", "BACKENDS", "backend_kind", "make_backend"]
