"""Scene pieces built from primitives only (no asset downloads): table, boxes with a domain's material, colours.

Everything takes the domain's friction / mass scale and palette at build time; a box's visual is named after its
palette colour, so a per-episode palette (`cotrain.envs.episode_domain`) can recolour it in place. Colours are set
per sub-scene, so one built scene serves every episode of its domain.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import sapien
import sapien.physx as physx
import sapien.render
import torch
from mani_skill.envs.scene import ManiSkillScene
from mani_skill.utils.building.ground import build_ground
from mani_skill.utils.structs.actor import Actor
from mani_skill.utils.structs.link import Link

from cotrain.envs.config import RGBA, DomainConfig

TABLE_HALF_SIZE = (0.7, 0.6, 0.025)
TABLE_CENTER_XY = (-0.15, 0.0)
"""The table top is the plane z = 0; the robot base stands on it at x = -0.615."""
FLOOR_Z = -0.8
DENSITY = 500.0
"""kg/m³ of task objects before the domain's mass scale (a 4 cm cube weighs 32 g)."""


def physx_material(domain: DomainConfig) -> physx.PhysxMaterial:
    return physx.PhysxMaterial(static_friction=domain.friction, dynamic_friction=domain.friction, restitution=0.0)


def grain_texture(noise: float, seed: int = 0, size: int = 64) -> sapien.render.RenderTexture2D:
    """A grey-scale wood-grain-like texture (streaks along one axis) that modulates the base colour."""
    rng = np.random.RandomState(seed)
    streaks = np.repeat(rng.rand(size, 1), size, axis=1) * 0.7 + rng.rand(size, size) * 0.3
    value = 1.0 - noise * streaks
    rgba = np.empty((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = (np.clip(value, 0.0, 1.0) * 255).astype(np.uint8)[..., None]
    rgba[..., 3] = 255
    return sapien.render.RenderTexture2D(rgba, "R8G8B8A8Unorm", filter_mode="nearest")


def build_table(scene: ManiSkillScene, domain: DomainConfig) -> Actor:
    """A static box table whose top is z = 0, coloured (and optionally textured) by the domain; plus a floor."""
    builder = scene.create_actor_builder()
    pose = sapien.Pose(p=[0, 0, -TABLE_HALF_SIZE[2]])
    builder.add_box_collision(pose=pose, half_size=TABLE_HALF_SIZE, material=physx_material(domain))
    material = sapien.render.RenderMaterial(base_color=list(domain.table_rgba), roughness=0.8)
    if domain.table_texture_noise > 0 and scene.can_render():
        material.base_color_texture = grain_texture(domain.table_texture_noise)
    builder.add_box_visual(pose=pose, half_size=TABLE_HALF_SIZE, material=material)
    builder.initial_pose = sapien.Pose(p=[*TABLE_CENTER_XY, 0])
    table = builder.build_static(name="table")
    build_ground(scene, floor_width=20, altitude=FLOOR_Z)
    return table


def add_box(builder, half_size: Sequence[float], center: Sequence[float], color: str | None, domain: DomainConfig,
            collision: bool = True) -> None:
    """Add one box (collision + visual) to an actor or link builder, with the domain's friction and mass scale.

    `color`: a name in the domain's palette (the visual shape is named after it: `set_palette_colors`), or None for
    white, which the task recolours per episode (`set_color`)."""
    pose = sapien.Pose(p=list(center))
    if collision:
        builder.add_box_collision(pose=pose, half_size=list(half_size), material=physx_material(domain),
                                  density=DENSITY * domain.mass_scale)
    rgba = (1.0, 1.0, 1.0, 1.0) if color is None else domain.palette[color]
    builder.add_box_visual(pose=pose, half_size=list(half_size),
                           material=sapien.render.RenderMaterial(base_color=list(rgba), roughness=0.6),
                           name=color or "")


def render_shapes(body: Actor | Link, i: int) -> list:
    """The visual shapes of an actor or link in sub-scene i (none without a renderer)."""
    render = body._bodies[i].entity.find_component_by_type(sapien.render.RenderBodyComponent)
    return [] if render is None else render.render_shapes


def set_color(actor: Actor, rgba: RGBA, env_idx: Sequence[int]) -> None:
    """Recolour every visual shape of `actor` in the given sub-scenes (no-op without a renderer)."""
    for i in env_idx:
        for shape in render_shapes(actor, int(i)):
            shape.material.base_color = list(rgba)


def set_palette_colors(body: Actor | Link, palette: dict[str, RGBA], i: int) -> None:
    """Recolour, in sub-scene i, the visual shapes of `body` named after a palette colour (`add_box`)."""
    for shape in render_shapes(body, i):
        if shape.name in palette:
            shape.material.base_color = list(palette[shape.name])


def uniform(low: Sequence[float], high: Sequence[float], n: int) -> torch.Tensor:
    """n samples uniform in the box [low, high] (uses torch's RNG, which ManiSkill seeds per episode)."""
    low_t, high_t = torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)
    return low_t + torch.rand(n, len(low)) * (high_t - low_t)


def around(center: Sequence[float], half_extent: Sequence[float], n: int) -> torch.Tensor:
    c, h = np.asarray(center, dtype=np.float32), np.asarray(half_extent, dtype=np.float32)
    return uniform(c - h, c + h, n)
