"""Pick-and-place twin: put one primitive object into a tray built from boxes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import sapien
import torch
from mani_skill.utils.registration import register_env
from mani_skill.utils.structs.actor import Actor
from mani_skill.utils.structs.pose import Pose
from transforms3d.euler import euler2quat

from cotrain.envs.base import TwinTaskEnv
from cotrain.envs.config import ConfigError, PickPlaceVariation
from cotrain.envs.scene import DENSITY, FLOOR_Z, add_box, around, physx_material, set_color


@dataclass(frozen=True)
class Shape:
    kind: str
    """box | cylinder | capsule."""
    size: tuple[float, ...]
    """box: half sizes (x, y, z); cylinder: (radius, half height) standing upright; capsule: (radius, half length)
    lying along x."""
    word: str
    """How the instruction calls it."""
    grasp_yaw: float
    """TCP yaw relative to the object's yaw that closes the fingers across the narrow side."""
    symmetry: float
    """Yaw period of the grasp (the expert picks the equivalent yaw closest to its current one)."""

    @property
    def half_height(self) -> float:
        return self.size[2] if self.kind == "box" else self.size[1] if self.kind == "cylinder" else self.size[0]

    def scaled(self, scale: float) -> "Shape":
        """The same shape with every size × scale."""
        return dataclasses.replace(self, size=tuple(s * scale for s in self.size))


SHAPES = {
    "cube": Shape("box", (0.02, 0.02, 0.02), "cube", 0.0, math.pi / 2),
    "block": Shape("box", (0.015, 0.03, 0.02), "block", math.pi / 2, math.pi),
    "cylinder": Shape("cylinder", (0.02, 0.025), "cylinder", 0.0, 2 * math.pi),
    "small_cube": Shape("box", (0.015, 0.015, 0.015), "small cube", 0.0, math.pi / 2),
    "tall_block": Shape("box", (0.017, 0.017, 0.035), "tall block", 0.0, math.pi / 2),
    "capsule": Shape("capsule", (0.018, 0.025), "capsule", 0.0, math.pi),
}
"""Train on cube/block/cylinder; small_cube/tall_block/capsule are the held-out shapes."""

TRAY_INNER_HALF = 0.065
TRAY_WALL = 0.006
TRAY_HEIGHT = 0.035
"""Height of the tray walls before the domain's `tray_wall_scale` (`PickPlaceEnv.tray_height`)."""
PLACE_MARGIN = 0.01
"""The object's centre must be this far inside the tray walls."""
PARK_XY = (2.0, 2.0)
"""Where the shapes not used in an episode wait (on the floor, out of view)."""


def instruction(color: str, shape: str) -> str:
    """The task text of an episode with the object `shape` (a SHAPES name) of palette colour `color`."""
    return f"put the {color} {SHAPES[shape].word} in the tray"


def parse_instruction(text: str) -> tuple[str, str] | None:
    """(colour, shape name) of a task text `instruction` wrote; None for any other text."""
    words = text.strip().split()
    if words[:2] != ["put", "the"] or words[-3:] != ["in", "the", "tray"]:
        return None
    middle = words[2:-3]
    for name, shape in SHAPES.items():
        if len(middle) > 1 and middle[1:] == shape.word.split():
            return middle[0], name
    return None


@register_env("CotrainPickPlace-v1", max_episode_steps=80)
class PickPlaceEnv(TwinTaskEnv):
    """**Task Description:**
    Pick up one object (a primitive of several shapes, sizes and colours) from the table and put it into a
    tray built from boxes. Instruction: "put the <colour> <shape> in the tray".

    **Randomizations:**
    - the domain's `object_size_scale` and `tray_wall_scale` size the objects and the tray walls (the real-proxy's
      differ slightly from the twin's)
    - the object's shape and colour are drawn from the variation's lists (one built actor per shape; the others
      are parked off the table)
    - the object's xy is uniform in the variation's region, its yaw uniform in [0, 2π)
    - the tray's xy is uniform in the variation's region (axis-aligned)
    - training envs (`randomize=True`) also draw the episode's domain: colours, light, camera pose, friction, mass
      and latency around the configured ones (`TwinTaskEnv`)

    **Success Conditions:**
    - the object's centre is inside the tray walls (by PLACE_MARGIN), low enough to rest in it, and it is not grasped
    """

    DENSE_REWARD_MAX = 4.0
    SCENE_LABELS = ("object_x", "object_y", "object_z", "tray_x", "tray_y")
    variation: PickPlaceVariation

    def _load_objects(self, options: dict):
        unknown = [s for s in self.variation.shapes if s not in SHAPES]
        if unknown:
            raise ConfigError(f"{self.task_cfg.source}: variations.{self.variation_name}.shapes: unknown {unknown} "
                              f"(known: {', '.join(SHAPES)})")
        self.shape_names = list(self.variation.shapes)
        self.shapes = {name: SHAPES[name].scaled(self.domain.object_size_scale) for name in self.shape_names}
        """The shapes as this domain builds them (`object_size_scale`)."""
        self.tray_height = TRAY_HEIGHT * self.domain.tray_wall_scale
        self.objects = [self._build_shape(name, self.shapes[name], i) for i, name in enumerate(self.shape_names)]
        builder = self.scene.create_actor_builder()
        if "tray" not in self.domain.palette:
            raise ConfigError(f"{self.task_cfg.source}: domains.{self.domain_name}.palette needs a 'tray' colour")
        h, w, t = TRAY_INNER_HALF, TRAY_WALL, self.tray_height
        add_box(builder, (h + w, h + w, w / 2), (0, 0, w / 2), "tray", self.domain)
        for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            half = (w / 2, h + w, t / 2) if sx else (h + w, w / 2, t / 2)
            add_box(builder, half, (sx * (h + w / 2), sy * (h + w / 2), t / 2), "tray", self.domain)
        builder.initial_pose = sapien.Pose(p=[0, 0.2, 0])
        self.tray = builder.build_kinematic(name="tray")
        self._shape_idx = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.obj: Actor
        """A view of the object used in each sub-scene (rebuilt at every reset)."""

    def _build_shape(self, name: str, shape: Shape, i: int):
        builder = self.scene.create_actor_builder()
        mat, density = physx_material(self.domain), DENSITY * self.domain.mass_scale
        render = sapien.render.RenderMaterial(base_color=[1, 1, 1, 1], roughness=0.5)
        if shape.kind == "box":
            builder.add_box_collision(half_size=shape.size, material=mat, density=density)
            builder.add_box_visual(half_size=shape.size, material=render)
        elif shape.kind == "cylinder":
            upright = sapien.Pose(q=euler2quat(0, math.pi / 2, 0))
            radius, half = shape.size
            builder.add_cylinder_collision(upright, radius=radius, half_length=half, material=mat, density=density)
            builder.add_cylinder_visual(upright, radius=radius, half_length=half, material=render)
        else:
            radius, half = shape.size
            builder.add_capsule_collision(radius=radius, half_length=half, material=mat, density=density)
            builder.add_capsule_visual(radius=radius, half_length=half, material=render)
        builder.initial_pose = sapien.Pose(p=[PARK_XY[0] + 0.3 * i, PARK_XY[1], FLOOR_Z + 0.1])
        return builder.build(name=name)

    def _initialize_objects(self, env_idx: torch.Tensor):
        b, var = len(env_idx), self.variation
        shape_idx = torch.randint(len(self.shape_names), (b,))
        color_idx = torch.randint(len(var.colors), (b,))
        xy = around(var.object_xy_center, var.object_xy_half_extent, b)
        yaw = torch.rand(b) * 2 * math.pi
        for k, (name, actor) in enumerate(zip(self.shape_names, self.objects)):
            chosen = shape_idx == k
            p = torch.tensor([PARK_XY[0] + 0.3 * k, PARK_XY[1], FLOOR_Z + 0.1]).repeat(b, 1)
            p[chosen, :2] = xy[chosen]
            p[chosen, 2] = self.shapes[name].half_height + 1e-3
            q = torch.stack([torch.cos(yaw / 2), 0 * yaw, 0 * yaw, torch.sin(yaw / 2)], dim=1)
            actor.set_pose(Pose.create_from_pq(p.to(self.device), q.to(self.device)))
        tray_xy = around(var.container_xy_center, var.container_xy_half_extent, b)
        self.tray.set_pose(Pose.create_from_pq(torch.cat([tray_xy, torch.zeros(b, 1)], 1).to(self.device)))
        self._shape_idx[env_idx] = shape_idx.to(self.device)
        self.obj = Actor.create_from_entities(
            [self.objects[k]._objs[i] for i, k in enumerate(self._shape_idx.tolist())], self.scene,
            torch.arange(self.num_envs, device=self.device), shared_name="object")
        for j, env in enumerate(env_idx.tolist()):
            name, color = self.shape_names[shape_idx[j]], var.colors[color_idx[j]]
            set_color(self.objects[shape_idx[j]], self.episode_domains[env].palette[color], [env])
            self.instructions[env] = instruction(color, name)

    def scene_labels(self) -> torch.Tensor:
        return torch.cat([self.obj.pose.p, self.tray.pose.p[:, :2]], dim=1)

    @property
    def shape(self) -> list[Shape]:
        """The shape used in each sub-scene (its size as built)."""
        return [self.shapes[self.shape_names[i]] for i in self._shape_idx.tolist()]

    def evaluate(self):
        is_grasped = self.agent.is_grasping(self.obj)
        obj_p = self.obj.pose.p
        half_h = torch.tensor([s.half_height for s in self.shape], device=self.device)
        offset = obj_p[:, :2] - self.tray.pose.p[:, :2]
        inside = torch.all(offset.abs() <= TRAY_INNER_HALF - PLACE_MARGIN, dim=1)
        resting = obj_p[:, 2] <= TRAY_WALL + half_h + 0.02
        is_placed = inside & resting
        return {
            "success": is_placed & ~is_grasped,
            "milestone": is_grasped,
            "is_grasped": is_grasped,
            "is_placed": is_placed,
        }

    def compute_dense_reward(self, obs, action: torch.Tensor, info: dict):
        obj_p = self.obj.pose.p
        reach = 1 - torch.tanh(5 * torch.linalg.norm(obj_p - self.tcp_pos, dim=1))
        above_tray = self.tray.pose.p + torch.tensor([0, 0, self.tray_height + 0.05], device=self.device)
        carry = 1 - torch.tanh(5 * torch.linalg.norm(obj_p - above_tray, dim=1))
        reward = reach + info["is_grasped"] + carry * (info["is_grasped"] | info["is_placed"]) + info["is_placed"]
        reward[info["success"]] = self.DENSE_REWARD_MAX
        return reward
