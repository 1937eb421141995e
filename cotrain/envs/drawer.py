"""Open-drawer and close-drawer twins: a cabinet articulation built from boxes, one drawer on a prismatic joint
with a bar handle.

Cabinet frame: origin at the centre of the front face on the table, x into the cabinet (away from the robot when
yaw = 0), z up. The drawer slides out along −x (towards the robot); its joint position is the opening in metres.
"""

from __future__ import annotations

import math

import sapien
import torch
from mani_skill.utils.registration import register_env
from mani_skill.utils.structs.pose import Pose
from transforms3d.euler import euler2quat

from cotrain.envs.base import TwinTaskEnv
from cotrain.envs.config import ConfigError, DomainConfig, DrawerVariation
from cotrain.envs.scene import add_box

DEPTH, WIDTH, HEIGHT, WALL = 0.24, 0.30, 0.12, 0.01
TRAVEL = 0.18
"""Drawer travel (m); the opening fraction is qpos / TRAVEL."""
HANDLE_LOCAL = (-WALL - 0.05, 0.0, 0.085)
"""Centre of the handle bar in the drawer frame (= cabinet frame when closed)."""
HANDLE_HALF = (0.0075, 0.05, 0.0075)
JOINT_DAMPING = 2.0
"""N·s/m, so the drawer does not coast."""
JOINT_FRICTION = 0.1
"""Joint friction coefficient before the domain's friction scale."""


def build_cabinet(env: TwinTaskEnv):
    """The cabinet articulation (fixed root) with the domain's colours, friction and mass."""
    dom = env.domain
    for key in ("cabinet", "drawer", "handle"):
        if key not in dom.palette:
            raise ConfigError(f"{env.task_cfg.source}: domains.{env.domain_name}.palette needs a {key!r} colour")
    builder = env.scene.create_articulation_builder()
    builder.disable_self_collisions = True
    body = builder.create_link_builder()
    body.set_name("body")
    c = "cabinet"
    add_box(body, (DEPTH / 2, WIDTH / 2, WALL / 2), (DEPTH / 2, 0, WALL / 2), c, dom)
    add_box(body, (DEPTH / 2, WIDTH / 2, WALL / 2), (DEPTH / 2, 0, HEIGHT - WALL / 2), c, dom)
    for side in (1, -1):
        add_box(body, (DEPTH / 2, WALL / 2, HEIGHT / 2), (DEPTH / 2, side * (WIDTH - WALL) / 2, HEIGHT / 2), c, dom)
    add_box(body, (WALL / 2, WIDTH / 2, HEIGHT / 2), (DEPTH - WALL / 2, 0, HEIGHT / 2), c, dom)

    drawer = builder.create_link_builder(body)
    drawer.set_name("drawer")
    d, inner_w, inner_d = "drawer", WIDTH / 2 - WALL - 0.004, (DEPTH - 2 * WALL) / 2
    add_box(drawer, (WALL / 2, WIDTH / 2, HEIGHT / 2 - 0.002), (-WALL / 2, 0, HEIGHT / 2), d, dom)
    add_box(drawer, (inner_d, inner_w, WALL / 2), (inner_d, 0, 1.5 * WALL), d, dom, collision=False)
    for side in (1, -1):
        add_box(drawer, (inner_d, WALL / 2, 0.035), (inner_d, side * (inner_w - WALL / 2), WALL + 0.035), d, dom,
                collision=False)
    add_box(drawer, HANDLE_HALF, HANDLE_LOCAL, "handle", dom)
    for side in (1, -1):
        standoff_x = (-WALL + HANDLE_LOCAL[0] + HANDLE_HALF[0]) / 2
        half = (abs(HANDLE_LOCAL[0] + WALL) / 2, 0.005, 0.005)
        add_box(drawer, half, (standoff_x, side * 0.04, HANDLE_LOCAL[2]), "handle", dom)
    towards_robot = sapien.Pose(q=euler2quat(0, 0, math.pi))
    drawer.set_joint_name("drawer_joint")
    drawer.set_joint_properties("prismatic", limits=[[0.0, TRAVEL]], pose_in_parent=towards_robot,
                                pose_in_child=towards_robot, damping=JOINT_DAMPING)
    builder.initial_pose = sapien.Pose(p=[0.1, 0, 0])
    cabinet = builder.build(name="cabinet", fix_root_link=True)
    for joint in cabinet.active_joints:
        joint.set_friction(JOINT_FRICTION * dom.friction)
    return cabinet


class DrawerEnv(TwinTaskEnv):
    """Shared by OpenDrawerEnv and CloseDrawerEnv (they differ in instruction, start range and success)."""

    variation: DrawerVariation
    INSTRUCTION: str
    SCENE_LABELS = ("handle_x", "handle_y", "handle_z", "cabinet_yaw")

    def _load_objects(self, options: dict):
        self.cabinet = build_cabinet(self)
        self.drawer_link = self.cabinet.links_map["drawer"]

    def _show_domain(self, i: int, new: DomainConfig) -> None:
        """The episode's domain, and the drawer joint's friction scaled by its friction like the built one."""
        if new.friction != self.episode_domains[i].friction:
            for joint in self.cabinet.active_joints:
                joint._objs[i].set_friction(JOINT_FRICTION * new.friction)
        super()._show_domain(i, new)

    def _initialize_objects(self, env_idx: torch.Tensor):
        b, var = len(env_idx), self.variation
        center, half = torch.tensor(var.cabinet_xy_center), torch.tensor(var.cabinet_xy_half_extent)
        xy = center + (torch.rand(b, 2) * 2 - 1) * half
        lo, hi = var.cabinet_yaw_range
        yaw = lo + torch.rand(b) * (hi - lo)
        q = torch.stack([torch.cos(yaw / 2), 0 * yaw, 0 * yaw, torch.sin(yaw / 2)], dim=1)
        p = torch.cat([xy, torch.zeros(b, 1)], dim=1)
        self.cabinet.set_pose(Pose.create_from_pq(p.to(self.device), q.to(self.device)))
        lo, hi = var.init_open_fraction
        fraction = lo + torch.rand(b, 1) * (hi - lo)
        self.cabinet.set_qpos((fraction * TRAVEL).to(self.device))
        self.cabinet.set_qvel(torch.zeros(b, 1, device=self.device))
        for env in env_idx.tolist():
            self.instructions[env] = self.INSTRUCTION

    # ----------------------------------------------------------------- geometry for predicates and experts
    def open_fraction(self) -> torch.Tensor:
        return self.cabinet.get_qpos()[:, 0] / TRAVEL

    def handle_pos(self) -> torch.Tensor:
        """World position of the handle bar's centre [N, 3]."""
        local = torch.tensor(HANDLE_LOCAL, device=self.device).repeat(self.num_envs, 1)
        return (self.drawer_link.pose * Pose.create_from_pq(local)).p

    def pull_direction(self) -> torch.Tensor:
        """Unit vector [N, 3] along which the drawer opens (towards the robot for yaw 0)."""
        x_axis = self.cabinet.pose.to_transformation_matrix()[:, :3, 0]
        return -x_axis

    def scene_labels(self) -> torch.Tensor:
        return torch.cat([self.handle_pos(), self.cabinet_yaw()[:, None]], dim=1)

    def cabinet_yaw(self) -> torch.Tensor:
        x_axis = self.cabinet.pose.to_transformation_matrix()[:, :3, 0]
        return torch.atan2(x_axis[:, 1], x_axis[:, 0])


@register_env("CotrainOpenDrawer-v1", max_episode_steps=80)
class OpenDrawerEnv(DrawerEnv):
    """**Task Description:**
    Open the drawer of a cabinet built from boxes by grasping its bar handle and pulling. Instruction:
    "open the drawer".

    **Randomizations:**
    - the cabinet's front-face xy and yaw are uniform in the variation's ranges
    - the drawer starts open by a fraction uniform in `init_open_fraction` (near closed for training)
    - training envs (`randomize=True`) also draw the episode's domain: colours, light, camera pose, friction (the
      joint's too), mass and latency around the configured ones (`TwinTaskEnv`)

    **Success Conditions:**
    - the drawer is open by at least OPEN_FRACTION of its travel
    """

    OPEN_FRACTION = 0.7
    DENSE_REWARD_MAX = 3.0
    INSTRUCTION = "open the drawer"

    def evaluate(self):
        fraction = self.open_fraction()
        is_grasped = self.agent.is_grasping(self.drawer_link)
        return {"success": fraction >= self.OPEN_FRACTION, "milestone": is_grasped, "is_grasped": is_grasped,
                "open_fraction": fraction}

    def compute_dense_reward(self, obs, action: torch.Tensor, info: dict):
        reach = 1 - torch.tanh(5 * torch.linalg.norm(self.handle_pos() - self.tcp_pos, dim=1))
        progress = torch.clamp(info["open_fraction"] / self.OPEN_FRACTION, 0, 1)
        reward = reach + info["is_grasped"] + progress
        reward[info["success"]] = self.DENSE_REWARD_MAX
        return reward


@register_env("CotrainCloseDrawer-v1", max_episode_steps=80)
class CloseDrawerEnv(DrawerEnv):
    """**Task Description:**
    Close an open drawer of a cabinet built from boxes by pushing it in. Instruction: "close the drawer".

    **Randomizations:**
    - the cabinet's front-face xy and yaw are uniform in the variation's ranges
    - the drawer starts open by a fraction uniform in `init_open_fraction` (well open for training)
    - training envs (`randomize=True`) also draw the episode's domain: colours, light, camera pose, friction (the
      joint's too), mass and latency around the configured ones (`TwinTaskEnv`)

    **Success Conditions:**
    - the drawer is open by at most CLOSED_FRACTION of its travel
    """

    CLOSED_FRACTION = 0.1
    DENSE_REWARD_MAX = 2.0
    INSTRUCTION = "close the drawer"

    def evaluate(self):
        fraction = self.open_fraction()
        touching = self.fingers_touch(self.drawer_link)
        return {"success": fraction <= self.CLOSED_FRACTION, "milestone": touching, "open_fraction": fraction}

    def compute_dense_reward(self, obs, action: torch.Tensor, info: dict):
        push_point = self.handle_pos() + 0.02 * self.pull_direction()
        reach = 1 - torch.tanh(5 * torch.linalg.norm(push_point - self.tcp_pos, dim=1))
        reward = reach + (1 - info["open_fraction"])
        reward[info["success"]] = self.DENSE_REWARD_MAX
        return reward
