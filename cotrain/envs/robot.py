"""The Panda of the ManiSkill wheel with the cotrain action and state conventions.

Action (float32[7], 10 Hz): Δxyz in m and Δrpy in rad of the TCP, both in the robot base frame (ManiSkill's
`root_translation:root_aligned_body_rotation`, relative to the *current* TCP pose; Δrpy are the intrinsic X-Y-Z
Euler angles of the rotation applied, ≈ the rotation vector for small angles), clipped to ±POS_LIMIT / ±ROT_LIMIT
per axis; gripper −1 (closed) … +1 (open), mapped linearly to finger targets −0.01 … 0.04 m.

State (float32[8]): TCP xyz in the robot base frame, TCP roll/pitch/yaw (extrinsic x-y-z, i.e.
R = Rz(yaw)·Ry(pitch)·Rx(roll)) with roll wrapped to [0, 2π) so the top-down grasp (roll ≈ π) has no ±π jump,
and the two finger joint positions (m). The robot bridge must compute the same numbers on the Franka.
"""

from __future__ import annotations

import math
from copy import deepcopy

import torch
from mani_skill.agents.controllers import PDEEPoseControllerConfig
from mani_skill.agents.registration import register_agent
from mani_skill.agents.robots.panda.panda import Panda
from mani_skill.utils.geometry.rotation_conversions import matrix_to_euler_angles, quaternion_to_matrix

from cotrain.envs.controller import NativeEEPoseControllerConfig

POS_LIMIT = 0.1
"""Largest |Δx|, |Δy|, |Δz| per control step (m)."""
ROT_LIMIT = 0.3
"""Largest |Δroll|, |Δpitch|, |Δyaw| per control step (rad)."""
CONTROL_MODE = "pd_ee_delta_pose"
ROBOT_UID = "panda_cotrain"
"""The Panda whose CPU (batch-1) path runs natively (`CotrainPanda`); the default."""
MANISKILL_ROBOT_UID = "panda_cotrain_maniskill"
"""The same Panda with ManiSkill's torch controller and maths (`ManiSkillCotrainPanda`): the reference."""
ROBOT_BASE_XYZ = (-0.615, 0.0, 0.0)
"""Where the robot base stands in the world frame (the table top is z = 0)."""
REST_QPOS = (0.0, math.pi / 8, 0.0, -math.pi * 5 / 8, 0.0, math.pi * 3 / 4, math.pi / 4, 0.04, 0.04)
"""Arm pose at reset: TCP about 0.17 m above the table centre, pointing down, fingers open along y."""


@register_agent()
class ManiSkillCotrainPanda(Panda):
    """Panda with one controller: metric (unnormalised) Δ end-effector pose + the usual mimic gripper, all maths in
    ManiSkill's batched torch code (the reference; what `physx_cuda` runs)."""

    uid = MANISKILL_ROBOT_UID
    ARM_CONTROLLER: type[PDEEPoseControllerConfig] = PDEEPoseControllerConfig

    @property
    def _controller_configs(self):
        arm = self.ARM_CONTROLLER(
            joint_names=self.arm_joint_names,
            pos_lower=-POS_LIMIT,
            pos_upper=POS_LIMIT,
            rot_lower=-ROT_LIMIT,
            rot_upper=ROT_LIMIT,
            stiffness=self.arm_stiffness,
            damping=self.arm_damping,
            force_limit=self.arm_force_limit,
            ee_link=self.ee_link_name,
            urdf_path=self.urdf_path,
            normalize_action=False,
        )
        gripper = deepcopy(super()._controller_configs["pd_ee_delta_pose"]["gripper"])
        return {CONTROL_MODE: dict(arm=arm, gripper=gripper)}


@register_agent()
class CotrainPanda(ManiSkillCotrainPanda):
    """The same robot and controller whose CPU path (one env, physx_cpu) runs natively: IK in SAPIEN's C++
    pinocchio, pose maths on `sapien.Pose` (`cotrain.envs.controller`). Batched (physx_cuda) it is the reference."""

    uid = ROBOT_UID
    ARM_CONTROLLER = NativeEEPoseControllerConfig


def clip_action(action: torch.Tensor) -> torch.Tensor:
    """Clip a batch of cotrain actions [N, 7] to the controller's limits."""
    limits = torch.tensor([POS_LIMIT] * 3 + [ROT_LIMIT] * 3 + [1.0], dtype=action.dtype, device=action.device)
    return torch.clamp(action, -limits, limits)


def ee_state(agent: Panda) -> torch.Tensor:
    """The 8-d cotrain state [N, 8] (see the module docstring) of a ManiSkill Panda."""
    tcp_at_base = agent.robot.pose.inv() * agent.tcp.pose
    yaw_pitch_roll = matrix_to_euler_angles(quaternion_to_matrix(tcp_at_base.q), "ZYX")
    roll = torch.remainder(yaw_pitch_roll[:, 2:3], 2 * math.pi)
    rpy = torch.cat([roll, yaw_pitch_roll[:, 1:2], yaw_pitch_roll[:, 0:1]], dim=1)
    fingers = agent.robot.get_qpos()[:, -2:]
    return torch.cat([tcp_at_base.p, rpy, fingers], dim=1).to(torch.float32)
