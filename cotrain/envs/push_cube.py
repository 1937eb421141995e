"""Push-cube-by-instruction twin: three coloured cubes, the instruction names the one to push onto the line."""

from __future__ import annotations

import sapien
import torch
from mani_skill.utils.registration import register_env
from mani_skill.utils.structs.pose import Pose

from cotrain.envs.base import TwinTaskEnv
from cotrain.envs.config import ConfigError, PushCubeVariation
from cotrain.envs.scene import add_box, set_color

CUBE_HALF = 0.02
"""Half-size of the cubes before the domain's `object_size_scale` (`PushCubeEnv.cube_half`)."""
N_CUBES = 3
GOAL_X = 0.1
"""x of the centre of the target line (a visual-only strip across the table)."""
GOAL_HALF_WIDTH = 0.03
"""A cube is on the line when |x − GOAL_X| <= this."""
LINE_HALF_LENGTH = 0.25


@register_env("CotrainPushCube-v1", max_episode_steps=80)
class PushCubeEnv(TwinTaskEnv):
    """**Task Description:**
    Three cubes of different colours stand in a row along y; push the one the instruction names ("push the
    <colour> cube onto the line") forward (+x) onto a line drawn across the table, leaving the others off it.
    A policy that ignores the instruction succeeds about 1/3 of the time.

    **Randomizations:**
    - the domain's `object_size_scale` sizes the cubes (the real-proxy's are slightly larger than the twin's)
    - three distinct colours are drawn from the variation's colours and shuffled over the three slots; the target
      is one of them, uniformly
    - the row's x is uniform in `row_x_range`; each cube's xy gets ± `jitter`
    - training envs (`randomize=True`) also draw the episode's domain: colours, light, camera pose, friction, mass
      and latency around the configured ones (`TwinTaskEnv`)

    **Success Conditions:**
    - the named cube's centre is on the line (|x − GOAL_X| <= GOAL_HALF_WIDTH) and no other cube has reached it
    """

    DENSE_REWARD_MAX = 3.0
    SCENE_LABELS = tuple(f"cube{i}_{axis}" for i in range(N_CUBES) for axis in "xy")
    variation: PushCubeVariation

    def _load_objects(self, options: dict):
        if len(set(self.variation.colors)) < N_CUBES:
            raise ConfigError(f"{self.task_cfg.source}: variations.{self.variation_name}.colors needs at least "
                              f"{N_CUBES} distinct colours")
        self.cube_half = CUBE_HALF * self.domain.object_size_scale
        """The cubes' half-size as this domain builds them."""
        self.cubes = []
        for i in range(N_CUBES):
            builder = self.scene.create_actor_builder()
            add_box(builder, (self.cube_half,) * 3, (0, 0, 0), None, self.domain)
            builder.initial_pose = sapien.Pose(p=[0, 0.1 * i, self.cube_half])
            self.cubes.append(builder.build(name=f"cube_{i}"))
        if "line" not in self.domain.palette:
            raise ConfigError(f"{self.task_cfg.source}: domains.{self.domain_name}.palette needs a 'line' colour")
        builder = self.scene.create_actor_builder()
        add_box(builder, (GOAL_HALF_WIDTH, LINE_HALF_LENGTH, 5e-4), (0, 0, 5e-4), "line", self.domain,
                collision=False)
        builder.initial_pose = sapien.Pose(p=[GOAL_X, 0, 0])
        self.line = builder.build_kinematic(name="goal_line")
        self._target = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)

    def _initialize_objects(self, env_idx: torch.Tensor):
        b, var = len(env_idx), self.variation
        lo, hi = var.row_x_range
        row_x = lo + torch.rand(b) * (hi - lo)
        for i, cube in enumerate(self.cubes):
            xy = torch.stack([row_x, torch.full((b,), (i - 1) * var.row_y_spacing)], dim=1)
            xy += (torch.rand(b, 2) * 2 - 1) * var.jitter
            p = torch.cat([xy, torch.full((b, 1), self.cube_half)], dim=1)
            cube.set_pose(Pose.create_from_pq(p.to(self.device)))
        target = torch.randint(N_CUBES, (b,))
        self._target[env_idx] = target.to(self.device)
        for j, env in enumerate(env_idx.tolist()):
            colors = [var.colors[k] for k in torch.randperm(len(var.colors))[:N_CUBES].tolist()]
            for cube, color in zip(self.cubes, colors):
                set_color(cube, self.episode_domains[env].palette[color], [env])
            self.instructions[env] = f"push the {colors[target[j]]} cube onto the line"

    def scene_labels(self) -> torch.Tensor:
        return torch.cat([c.pose.p[:, :2] for c in self.cubes], dim=1)

    def target_pos(self) -> torch.Tensor:
        """Position of the named cube in each sub-scene [N, 3]."""
        p = torch.stack([c.pose.p for c in self.cubes], dim=1)
        return p[torch.arange(self.num_envs, device=self.device), self._target]

    def evaluate(self):
        xs = torch.stack([c.pose.p[:, 0] for c in self.cubes], dim=1)
        on_line = (xs - GOAL_X).abs() <= GOAL_HALF_WIDTH
        reached = xs >= GOAL_X - GOAL_HALF_WIDTH
        is_target = torch.nn.functional.one_hot(self._target, N_CUBES).bool()
        target_on_line = (on_line & is_target).any(dim=1)
        others_reached = (reached & ~is_target).any(dim=1)
        touches = torch.stack([self.fingers_touch(c) for c in self.cubes], dim=1)
        return {
            "success": target_on_line & ~others_reached,
            "milestone": (touches & is_target).any(dim=1),
            "target_on_line": target_on_line,
            "others_reached": others_reached,
        }

    def compute_dense_reward(self, obs, action: torch.Tensor, info: dict):
        cube = self.target_pos()
        push_point = cube - torch.tensor([self.cube_half + 0.01, 0, 0], device=self.device)
        reach = 1 - torch.tanh(5 * torch.linalg.norm(push_point - self.tcp_pos, dim=1))
        progress = 1 - torch.tanh(5 * (GOAL_X - cube[:, 0]).abs())
        reward = reach + progress + (info["target_on_line"] & ~info["others_reached"])
        reward[info["success"]] = self.DENSE_REWARD_MAX
        return reward
