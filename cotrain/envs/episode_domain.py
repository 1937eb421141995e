"""Domain randomisation per episode in a built twin scene: which domains may be randomised, and the in-place changes
that bring one sub-scene from the domain it shows to another (`TwinTaskEnv(randomize=True)` calls them at reset).

Which domains: the training domains only (`sim`, a calibrated `twin`). The real-proxy plays the real world and is
never randomised: asking for it is a ConfigError naming the domain. Evaluation builds its envs with randomize=False.

What changes without a reconfigure (ManiSkill 3 / SAPIEN 3, CPU PhysX: one sub-scene per env):
- colours: the base colour of the table (its grain texture stays) and of every visual named after a palette colour
  (`scene.add_box`: tray, goal line, cabinet, drawer, handle); the task colours its objects from the episode's palette;
- light: the ambient light and the colour of the directional light of the sub-scene's render system;
- camera: the local pose of the sensor camera (and of the human render camera) — `RenderCamera.set_local_pose`;
- friction: static and dynamic friction of the physical material of every collision shape of the table and the
  task's bodies (`domain_bodies`), set in place (PhysX reads a material at every contact);
- mass: mass and inertia of the task's dynamic bodies, scaled from their built values (`BuiltMasses`);
- latency: kept by the env (its pending-action buffer).

GPU simulation (physx_cuda, unverified): ManiSkill builds one render and one physical material per shape for all
sub-scenes, a camera's pose is set for all sub-scenes at once, and PhysX fixes masses and materials once the GPU
simulation is initialised. Colour, camera, friction and mass ranges there are a ConfigError (`check_randomize`);
light and latency vary per sub-scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sapien
import sapien.physx as physx
from mani_skill.utils.structs.actor import Actor
from mani_skill.utils.structs.link import Link

from cotrain.errors import ConfigError

REAL_PROXY_DOMAIN = "real_proxy"
"""The domain that plays the real world: never randomised."""
GPU_FIXED_RANGES = ("color", "camera_eye", "camera_target", "friction", "mass_scale")
"""Ranges that cannot vary per sub-scene and episode on the GPU simulation (see the module docstring)."""


def check_randomize(task_cfg, domain: str, gpu_sim: bool) -> None:
    """ConfigError where `randomize=True` cannot hold: on the real-proxy, or with a range of GPU_FIXED_RANGES on the
    GPU simulation."""
    if domain == REAL_PROXY_DOMAIN:
        raise ConfigError(f"{task_cfg.source}: randomize=True on domain {domain!r}: the real-proxy plays the real "
                          "world and is never randomised")
    fixed = [name for name in GPU_FIXED_RANGES if getattr(task_cfg.randomization, name) > 0]
    if gpu_sim and fixed:
        raise ConfigError(f"{task_cfg.source}: randomization.{', '.join(fixed)} cannot vary per episode on the GPU "
                          "simulation (shared materials, masses fixed after initialisation); set them to 0 there")


def domain_bodies(actors: list[Actor], articulations: list, table: Actor) -> list[Actor | Link]:
    """What the domain's friction and mass apply to: the table, every actor that is not static (the task's objects;
    the only other static actor is the floor) and every link of `articulations` (the task's, not the robot)."""
    moving = [a for a in actors if a.px_body_type != "static"]
    return [table, *moving, *(link for art in articulations for link in art.links)]


def set_friction(bodies: list[Actor | Link], i: int, friction: float) -> None:
    """Static and dynamic friction of every collision shape of `bodies` in sub-scene i."""
    for body in bodies:
        for shape in body._bodies[i].collision_shapes:
            material = shape.physical_material
            material.set_static_friction(friction)
            material.set_dynamic_friction(friction)


@dataclass(frozen=True)
class BuiltMass:
    body: physx.PhysxRigidBodyComponent
    mass: float
    inertia: np.ndarray


class BuiltMasses:
    """The masses and inertias of the dynamic bodies among `bodies` as built, per sub-scene, to scale from (scaling
    the built values keeps no drift over episodes; a uniform density scale leaves the centre of mass in place)."""

    def __init__(self, bodies: list[Actor | Link], num_envs: int):
        dynamic = [b for b in bodies if isinstance(b, Link) or b.px_body_type == "dynamic"]
        self.per_env = [[BuiltMass(b._bodies[i], float(b._bodies[i].mass), np.array(b._bodies[i].inertia))
                         for b in dynamic] for i in range(num_envs)]

    def scale(self, i: int, ratio: float) -> None:
        """Sub-scene i's dynamic bodies at `ratio` × their built mass and inertia."""
        for built in self.per_env[i]:
            built.body.set_mass(built.mass * ratio)
            built.body.set_inertia(built.inertia * ratio)


def set_lights(sub_scene: sapien.Scene, ambient: tuple[float, ...], color: tuple[float, ...]) -> None:
    """The sub-scene's ambient light and the colour of its directional light(s)."""
    render_system = sub_scene.render_system
    render_system.ambient_light = list(ambient)
    for light in render_system.lights:
        if isinstance(light, sapien.render.RenderDirectionalLightComponent):
            light.color = list(color)
