"""The Δ end-effector pose controller with native maths on the CPU (batch-1) path.

ManiSkill's `PDEEPoseController` solves its IK on the CPU with SAPIEN's pure-Python pinocchio wrapper (a Python loop
of ≈ 50 CLIK iterations) and does its pose maths on [1, 7] torch tensors (computing the current TCP pose twice, once
for nothing). `NativeEEPoseController` runs the same CLIK (same tolerance, step, damping, iteration cap and start
configuration) in SAPIEN's built-in C++ pinocchio, and the pose maths on `sapien.Pose`. It computes the same joint
targets up to float rounding, so trajectories stay the same (`tests/test_envs_controller.py`). Under `physx_cuda`
(batched) it is ManiSkill's controller unchanged.

Target of one step (frame `root_translation:root_aligned_body_rotation`, relative to the *current* TCP pose):
    p* = p + Δp,   q* = quat(Rx(Δr)·Ry(Δp)·Rz(Δy)) ⊗ q      (TCP pose in the robot base frame)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sapien
import torch
from mani_skill.agents.controllers import PDEEPoseController, PDEEPoseControllerConfig
from sapien.pysapien_pinocchio import PinocchioModel

CLIK_EPS = 1e-4
"""Stop when the se(3) error norm is below this (as ManiSkill's CPU IK)."""
CLIK_MAX_ITERATIONS = 100
CLIK_DT = 0.1
CLIK_DAMP = 1e-6


def euler_xyz_to_quat(rx: float, ry: float, rz: float) -> tuple[float, float, float, float]:
    """Quaternion (w, x, y, z) of R = Rx(rx)·Ry(ry)·Rz(rz) (intrinsic X-Y-Z Euler angles), i.e. qx ⊗ qy ⊗ qz."""
    cx, sx = math.cos(rx / 2), math.sin(rx / 2)
    cy, sy = math.cos(ry / 2), math.sin(ry / 2)
    cz, sz = math.cos(rz / 2), math.sin(rz / 2)
    return (cx * cy * cz - sx * sy * sz, sx * cy * cz + cx * sy * sz,
            cx * sy * cz - sx * cy * sz, cx * cy * sz + sx * sy * cz)


def delta_target(ee_at_base: sapien.Pose, delta: np.ndarray) -> sapien.Pose:
    """Target TCP pose in the base frame for action Δ = (Δxyz, Δrpy): translate in the base frame, rotate about the
    base axes (the module docstring's formula)."""
    rotation = sapien.Pose(q=euler_xyz_to_quat(*(float(v) for v in delta[3:6])))
    return sapien.Pose(p=ee_at_base.p + delta[:3], q=(rotation * sapien.Pose(q=ee_at_base.q)).q)


class NativeEEPoseController(PDEEPoseController):
    """`PDEEPoseController` (frame root_translation:root_aligned_body_rotation, use_target False, no interpolation)
    whose CPU path runs natively; see the module docstring."""

    config: "NativeEEPoseControllerConfig"

    def _initialize_joints(self):
        super()._initialize_joints()
        self.native = not self.scene.gpu_sim_enabled
        if not self.native:
            return
        cfg, kin = self.config, self.kinematics
        if cfg.use_target or cfg.interpolate or cfg.frame != "root_translation:root_aligned_body_rotation":
            raise ValueError("NativeEEPoseController supports only use_target=False, interpolate=False and frame "
                             f"root_translation:root_aligned_body_rotation, got {cfg.use_target}, "
                             f"{cfg.interpolate}, {cfg.frame}")
        with open(cfg.urdf_path) as f:
            self.pinocchio = PinocchioModel(f.read(), np.array([0.0, 0.0, -9.81]))
        art = self.articulation
        chain_joints = kin._kinematic_chain_joint_names
        self.pinocchio.set_joint_order([j.name for j in art.active_joints if j.name in chain_joints])
        self.pinocchio.set_link_order([lk.name for lk in art.links if lk.name in kin._kinematic_chain_link_names])
        self._px_articulation = art._objs[0]
        self._px_root = self.root_link._objs[0]
        self._px_ee = self.ee_link._objs[0]
        self._px_joints = [j._objs[0] for j in self.joints]
        self._ik_q0_index = kin.pmodel_active_joint_indices.numpy()
        self._ik_result_index = kin.pmodel_controlled_joint_indices.numpy()
        self._ik_mask = kin.qmask.numpy().astype(np.int32)
        self._arm_index = np.asarray(self.active_joint_indices.cpu(), dtype=np.int64)

    def ee_pose_at_base_native(self) -> sapien.Pose:
        """TCP (controlled link) pose in the robot base frame as a `sapien.Pose` (CPU only)."""
        return self._px_root.entity_pose.inv() * self._px_ee.entity_pose

    def set_action(self, action):
        if not self.native:
            return super().set_action(action)
        action = self._preprocess_action(action)
        delta = action[0].numpy().astype(np.float64)
        qpos = self._px_articulation.qpos
        self._step = 0
        self._start_qpos = torch.from_numpy(qpos[self._arm_index])[None]
        target = delta_target(self.ee_pose_at_base_native(), delta)
        result, success, _ = self.pinocchio.compute_inverse_kinematics(
            self.kinematics.end_link_idx, target, initial_qpos=qpos[self._ik_q0_index].astype(np.float64),
            active_qmask=self._ik_mask, eps=CLIK_EPS, max_iterations=CLIK_MAX_ITERATIONS, dt=CLIK_DT, damp=CLIK_DAMP)
        targets = result[self._ik_result_index].astype(np.float32) if success else qpos[self._arm_index]
        self._target_qpos = torch.from_numpy(targets)[None]
        for joint, value in zip(self._px_joints, targets):
            joint.drive_target = np.array([value], dtype=np.float32)


@dataclass
class NativeEEPoseControllerConfig(PDEEPoseControllerConfig):
    controller_cls = NativeEEPoseController
