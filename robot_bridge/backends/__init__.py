"""Arm backends behind one interface: `franky` (a Franka or franky-sim) and `twin` (the ManiSkill real-proxy env)."""

from __future__ import annotations

from robot_bridge.backends.base import ArmBackend, ArmReading
from robot_bridge.params import FrankaParams

BACKENDS = ("franky", "twin")


def make_backend(p: FrankaParams) -> ArmBackend:
    if p.backend == "franky":
        from robot_bridge.backends.franky_backend import FrankyBackend

        return FrankyBackend(p)
    if p.backend == "twin":
        from robot_bridge.backends.twin_backend import TwinBackend

        return TwinBackend(p)
    raise ValueError(f"franka.backend={p.backend!r}: expected one of {BACKENDS}")


__all__ = ["ArmBackend", "ArmReading", "make_backend", "BACKENDS"]
