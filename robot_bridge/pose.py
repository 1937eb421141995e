"""End-effector pose arithmetic shared by the backends and the policy node (pure numpy, no ROS).

Two conventions, both those of the twin (cotrain/envs/robot.py), which the policy was trained in:
    action Δrpy: intrinsic "XYZ" Euler angles  R(Δ) = Rx(Δr) @ Ry(Δp) @ Rz(Δy), applied as  p' = p + Δp,
                 R' = R(Δ) @ R   (ManiSkill's pd_ee_delta_pose, frame root_translation:root_aligned_body_rotation)
    state rpy:   static-axis XYZ  R = Rz(yaw) @ Ry(pitch) @ Rx(roll), roll wrapped to [0, 2π) so that the
                 top-down gripper (roll ≈ π, the Franka's home) has no ±π jump   (`state_rpy`)
Quaternions are [x, y, z, w] (franky's and ROS's order).
"""

from __future__ import annotations

import numpy as np


def _rx(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """R = Rx(r) @ Ry(p) @ Rz(y) (intrinsic XYZ, pytorch3d's `euler_angles_to_matrix(·, "XYZ")`)."""
    r, p, y = np.asarray(rpy, dtype=np.float64)
    return _rx(r) @ _ry(p) @ _rz(y)


def matrix_to_rpy(m: np.ndarray) -> np.ndarray:
    """Inverse of `rpy_to_matrix`; pitch in [-π/2, π/2]."""
    m = np.asarray(m, dtype=np.float64)
    # R[0,2] = sin p ; R[1,2] = -sin r cos p ; R[2,2] = cos r cos p ; R[0,1] = -cos p sin y ; R[0,0] = cos p cos y
    p = np.arcsin(np.clip(m[0, 2], -1.0, 1.0))
    r = np.arctan2(-m[1, 2], m[2, 2])
    y = np.arctan2(-m[0, 1], m[0, 0])
    return np.array([r, p, y])


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion [x, y, z, w] with w >= 0."""
    m = np.asarray(m, dtype=np.float64)
    t = np.trace(m)
    if t > 0:
        s = 2.0 * np.sqrt(t + 1.0)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.zeros(4)
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
        q[3] = (m[k, j] - m[j, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quat_to_rpy(q: np.ndarray) -> np.ndarray:
    """Action-convention (intrinsic XYZ) angles of a quaternion."""
    return matrix_to_rpy(quat_to_matrix(q))


def state_rpy(q: np.ndarray) -> np.ndarray:
    """State-convention angles: R = Rz(yaw) @ Ry(pitch) @ Rx(roll), roll in [0, 2π) (cotrain.envs.robot.ee_state)."""
    m = quat_to_matrix(q)
    # R[2,0] = -sin p ; R[2,1] = cos p sin r ; R[2,2] = cos p cos r ; R[1,0] = cos p sin y ; R[0,0] = cos p cos y
    pitch = np.arcsin(np.clip(-m[2, 0], -1.0, 1.0))
    roll = np.remainder(np.arctan2(m[2, 1], m[2, 2]), 2 * np.pi)
    yaw = np.arctan2(m[1, 0], m[0, 0])
    return np.array([roll, pitch, yaw])


def apply_delta(xyz: np.ndarray, quat: np.ndarray, dxyz: np.ndarray, drpy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target pose of a delta action: p' = p + Δp, R' = R(Δrpy) @ R (root-aligned rotation)."""
    target_xyz = np.asarray(xyz, dtype=np.float64) + np.asarray(dxyz, dtype=np.float64)
    target_rot = rpy_to_matrix(drpy) @ quat_to_matrix(quat)
    return target_xyz, matrix_to_quat(target_rot)


def state_rpy_to_matrix(rpy) -> np.ndarray:
    """Inverse of `state_rpy`: R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    r, p, y = np.asarray(rpy, dtype=np.float64)
    return _rz(y) @ _ry(p) @ _rx(r)


def rotation_vector(m: np.ndarray) -> np.ndarray:
    """Axis · angle (angle in [0, π]) of a rotation matrix (the matrix logarithm)."""
    m = np.asarray(m, dtype=np.float64)
    angle = float(np.arccos(np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0)))
    if angle < 1e-9:
        return np.zeros(3)
    if angle > np.pi - 1e-6:  # near a half turn the antisymmetric part vanishes: axis from the symmetric part
        i = int(np.argmax(np.diag(m)))
        axis = (m[:, i] + np.eye(3)[i]) / np.sqrt(2.0 * (1.0 + m[i, i]))
        return axis * angle
    w = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    return w * (angle / (2.0 * np.sin(angle)))


def rotation_matrix(v) -> np.ndarray:
    """Rotation of angle ‖v‖ about v / ‖v‖ (Rodrigues; the matrix exponential of `rotation_vector`)."""
    v = np.asarray(v, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def angle_between(qa, qb) -> float:
    """Geodesic angle (rad, [0, π]) between two orientations given as quaternions [x, y, z, w]."""
    return float(np.linalg.norm(rotation_vector(quat_to_matrix(qa).T @ quat_to_matrix(qb))))
