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

import numpy as np
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

    def ee_state(self) -> torch.Tensor:
        """The 8-d cotrain state [N, 8] (see the module docstring)."""
        tcp_at_base = self.robot.pose.inv() * self.tcp.pose
        yaw_pitch_roll = matrix_to_euler_angles(quaternion_to_matrix(tcp_at_base.q), "ZYX")
        roll = torch.remainder(yaw_pitch_roll[:, 2:3], 2 * math.pi)
        rpy = torch.cat([roll, yaw_pitch_roll[:, 1:2], yaw_pitch_roll[:, 0:1]], dim=1)
        fingers = self.robot.get_qpos()[:, -2:]
        return torch.cat([tcp_at_base.p, rpy, fingers], dim=1).to(torch.float32)

    def finger_contact_forces(self, obj) -> tuple[torch.Tensor, torch.Tensor]:
        """Net contact force (N) of `obj` (an actor or link) on the left and on the right finger, [N, 3] each."""
        return (self.scene.get_pairwise_contact_forces(self.finger1_link, obj),
                self.scene.get_pairwise_contact_forces(self.finger2_link, obj))


@register_agent()
class CotrainPanda(ManiSkillCotrainPanda):
    """The same robot and controller whose CPU path (one env, physx_cpu) runs natively: IK in SAPIEN's C++
    pinocchio, pose maths on `sapien.Pose` (`cotrain.envs.controller`). Batched (physx_cuda) it is the reference."""

    uid = ROBOT_UID
    ARM_CONTROLLER = NativeEEPoseControllerConfig

    def _after_init(self):
        super()._after_init()
        self.native = not self.scene.gpu_sim_enabled
        if self.native:
            self._px_qpos_of = self.robot._objs[0]
            self._px_root = self.robot.root._objs[0]
            self._px_tcp = self.tcp._objs[0]
            self._px_fingers = (self.finger1_link._objs[0], self.finger2_link._objs[0])

    def ee_state(self) -> torch.Tensor:
        if not self.native:
            return super().ee_state()
        tcp_at_base = self._px_root.entity_pose.inv() * self._px_tcp.entity_pose
        state = tcp_state(tcp_at_base.p, tcp_at_base.to_transformation_matrix(), self._px_qpos_of.qpos[-2:])
        return torch.tensor([state], dtype=torch.float32)

    def finger_contact_forces(self, obj) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.native:
            return super().finger_contact_forces(obj)
        left, right = pairwise_contact_forces(self.scene.px.get_contacts(), [f.entity for f in self._px_fingers],
                                              obj._bodies[0].entity, self.scene.px.timestep)
        return torch.from_numpy(left[None]), torch.from_numpy(right[None])

    def is_grasping(self, object, min_force: float = 0.5, max_angle: float = 85) -> torch.Tensor:
        """ManiSkill's `Panda.is_grasping` (both fingers push on `object` with ≥ min_force, within max_angle of
        the direction that opens them), from one pass over the contacts."""
        if not self.native:
            return super().is_grasping(object, min_force, max_angle)
        forces = self.finger_contact_forces(object)
        grasped = True
        for sign, finger, force in zip((1.0, -1.0), self._px_fingers, forces):
            opening = sign * finger.entity_pose.to_transformation_matrix()[:3, 1]
            force = force[0].numpy()
            grasped &= bool(np.linalg.norm(force) >= min_force and angle_between(opening, force) <= max_angle)
        return torch.tensor([grasped])


def clip_action(action: torch.Tensor) -> torch.Tensor:
    """Clip a batch of cotrain actions [N, 7] to the controller's limits."""
    limits = torch.tensor([POS_LIMIT] * 3 + [ROT_LIMIT] * 3 + [1.0], dtype=action.dtype, device=action.device)
    return torch.clamp(action, -limits, limits)


def tcp_state(p: np.ndarray, transform: np.ndarray, fingers: np.ndarray) -> list[float]:
    """The 8-d cotrain state of one robot from the TCP position, its 4×4 transform (base frame) and the two finger
    positions: R = Rz(yaw)·Ry(pitch)·Rx(roll), so yaw = atan2(R10, R00), pitch = asin(−R20), roll = atan2(R21, R22),
    roll wrapped to [0, 2π) (the same numbers as `ManiSkillCotrainPanda.ee_state`)."""
    r = transform.astype(np.float64)
    yaw, roll = math.atan2(r[1, 0], r[0, 0]), math.atan2(r[2, 1], r[2, 2])
    pitch = math.asin(min(1.0, max(-1.0, -r[2, 0])))
    return [*p.tolist(), roll % (2 * math.pi), pitch, yaw, *fingers.tolist()]


def pairwise_contact_forces(contacts, fingers: list, obj, timestep: float) -> list[np.ndarray]:
    """Net contact force (N, float32[3]) of entity `obj` on each entity of `fingers`, from one pass over SAPIEN's
    contacts: the summed impulses of a contact act on its first body, so they count + where the finger is the first
    body and − where it is the second (as ManiSkill's `get_pairwise_contact_impulse`), divided by the timestep."""
    totals = [np.zeros(3) for _ in fingers]
    for contact in contacts:
        first, second = contact.bodies[0].entity, contact.bodies[1].entity
        for total, finger in zip(totals, fingers):
            sign = 1.0 if (first == finger and second == obj) else -1.0 if (first == obj and second == finger) else 0.0
            if sign:
                total += sign * np.sum([point.impulse for point in contact.points], axis=0)
    return [(total.astype(np.float32) / timestep).astype(np.float32) for total in totals]


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (degrees) between two 3-vectors; a vector shorter than 1e-6 counts as zero (angle 90°), as ManiSkill's
    `compute_angle_between`."""
    a, b = (v / n if (n := np.linalg.norm(v)) >= 1e-6 else np.zeros(3) for v in (a, b))
    return math.degrees(math.acos(min(1.0, max(-1.0, float(np.dot(a, b))))))


def ee_state(agent: ManiSkillCotrainPanda) -> torch.Tensor:
    """The 8-d cotrain state [N, 8] of a cotrain Panda (see the module docstring)."""
    return agent.ee_state()
