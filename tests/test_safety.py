"""robot_bridge.safety and robot_bridge.pose without ROS: hand-worked numbers."""

import sys

import numpy as np
import pytest

from robot_bridge import pose
from robot_bridge.safety import SafetyLimits, filter_action, hold_action, limit_lead, within_limits

LIM = SafetyLimits(
    workspace_min=(0.3, -0.2, 0.05), workspace_max=(0.7, 0.2, 0.5), max_translation=0.01, max_rotation=0.1
)
CENTER = np.array([0.5, 0.0, 0.3])


def test_safety_module_imports_no_ros():
    import robot_bridge.safety as s

    src = open(s.__file__).read()
    assert "rclpy" not in src and "import ros" not in src


def test_small_action_passes_unchanged():
    a = np.array([0.003, -0.004, 0.0, 0.01, 0.0, -0.02, 0.5])
    cmd = filter_action(a, CENTER, last_gripper=1.0, limits=LIM)
    np.testing.assert_array_equal(cmd.action, a)
    assert cmd.reasons == () and not cmd.rejected


def test_translation_scaled_to_max_norm_keeps_direction():
    # (0.03, 0.04, 0) has norm 0.05; capped to 0.01 -> (0.006, 0.008, 0)
    cmd = filter_action([0.03, 0.04, 0.0, 0, 0, 0, 1.0], CENTER, 1.0, LIM)
    np.testing.assert_allclose(cmd.action[:3], [0.006, 0.008, 0.0], atol=1e-12)
    assert cmd.reasons == ("translation_scaled",)


def test_rotation_scaled_to_max_norm():
    # (0.3, 0, 0.4) has norm 0.5; capped to 0.1 -> (0.06, 0, 0.08)
    cmd = filter_action([0, 0, 0, 0.3, 0.0, 0.4, 1.0], CENTER, 1.0, LIM)
    np.testing.assert_allclose(cmd.action[3:6], [0.06, 0.0, 0.08], atol=1e-12)
    assert cmd.reasons == ("rotation_scaled",)


def test_workspace_clip_at_the_wall():
    # ee at x = 0.695; a +0.01 step in x would reach 0.705 > 0.7 -> only +0.005 is sent
    ee = np.array([0.695, 0.0, 0.3])
    cmd = filter_action([0.01, 0, 0, 0, 0, 0, 1.0], ee, 1.0, LIM)
    np.testing.assert_allclose(cmd.action[:3], [0.005, 0.0, 0.0], atol=1e-12)
    assert cmd.reasons == ("workspace_clipped",)


def test_outside_the_box_may_only_move_back():
    # ee at z = 0.02, below the floor 0.05: moving further down is cut to 0, moving up is allowed in full
    ee = np.array([0.5, 0.0, 0.02])
    down = filter_action([0, 0, -0.01, 0, 0, 0, 1.0], ee, 1.0, LIM)
    np.testing.assert_allclose(down.action[:3], [0, 0, 0], atol=1e-12)
    up = filter_action([0, 0, 0.01, 0, 0, 0, 1.0], ee, 1.0, LIM)
    np.testing.assert_allclose(up.action[:3], [0, 0, 0.01], atol=1e-12)
    assert up.reasons == ()


def test_gripper_clipped_to_range():
    cmd = filter_action([0, 0, 0, 0, 0, 0, 3.0], CENTER, -1.0, LIM)
    assert cmd.action[6] == 1.0 and cmd.reasons == ("gripper_clipped",)


@pytest.mark.parametrize(
    "bad",
    [
        [np.nan, 0, 0, 0, 0, 0, 1.0],
        [0, 0, 0, np.inf, 0, 0, 1.0],
        [0, 0, 0, 0, 0, 0, -np.inf],
        [0.0] * 6,  # wrong length
        "not an action",
    ],
)
def test_non_finite_or_malformed_is_rejected_and_holds(bad):
    cmd = filter_action(bad, CENTER, last_gripper=-1.0, limits=LIM)
    assert cmd.rejected
    np.testing.assert_array_equal(cmd.action, hold_action(-1.0))


def test_non_finite_state_is_rejected():
    cmd = filter_action([0.001, 0, 0, 0, 0, 0, 1.0], [np.nan, 0, 0], 1.0, LIM)
    assert cmd.rejected and np.all(cmd.action[:6] == 0)


def test_combined_oversize_action_ends_within_limits():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ee = rng.uniform([0.2, -0.3, 0.0], [0.8, 0.3, 0.6])
        a = rng.normal(0, 1.0, 7)
        cmd = filter_action(a, ee, 1.0, LIM)
        assert within_limits(ee, cmd.action, LIM)


def test_within_limits_flags_violations():
    assert not within_limits(CENTER, np.array([0.02, 0, 0, 0, 0, 0, 1.0]), LIM)
    assert not within_limits(CENTER, np.array([0, 0, 0, 0, 0, 0, 1.5]), LIM)
    assert within_limits(CENTER, hold_action(1.0), LIM)


def test_limits_validated():
    with pytest.raises(ValueError, match="workspace_min"):
        SafetyLimits(workspace_min=(0.8, 0, 0), workspace_max=(0.7, 1, 1))


def test_rpy_convention_is_intrinsic_xyz():
    # R(r, p, y) = Rx(r) @ Ry(p) @ Rz(y): for (π/2, 0, π/2) the x-axis maps to (0, 1, 0)... worked by hand:
    # Rz(π/2) e_x = e_y ; Rx(π/2) e_y = e_z
    m = pose.rpy_to_matrix([np.pi / 2, 0.0, np.pi / 2])
    np.testing.assert_allclose(m @ [1, 0, 0], [0, 0, 1], atol=1e-12)
    rpy = np.array([0.3, -0.4, 1.2])
    np.testing.assert_allclose(pose.matrix_to_rpy(pose.rpy_to_matrix(rpy)), rpy, atol=1e-12)


def test_quaternion_round_trip_and_franka_home_orientation():
    # franky reports the home pose as q = [1, 0, 0, 0] (x, y, z, w): a half turn about x, i.e. rpy = (π, 0, 0)
    np.testing.assert_allclose(np.abs(pose.quat_to_rpy([1.0, 0, 0, 0])), [np.pi, 0, 0], atol=1e-12)
    q = pose.matrix_to_quat(pose.rpy_to_matrix([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(pose.quat_to_rpy(q), [0.1, 0.2, 0.3], atol=1e-12)


def test_apply_delta_is_root_aligned():
    # from identity orientation, Δyaw = 0.5 gives rpy (0, 0, 0.5); a further Δroll is applied in the root frame
    xyz, q = pose.apply_delta([0.5, 0, 0.3], [0, 0, 0, 1.0], [0.01, 0, 0], [0, 0, 0.5])
    np.testing.assert_allclose(xyz, [0.51, 0, 0.3])
    np.testing.assert_allclose(pose.quat_to_rpy(q), [0, 0, 0.5], atol=1e-12)
    _, q2 = pose.apply_delta(xyz, q, [0, 0, 0], [0.2, 0, 0])
    np.testing.assert_allclose(pose.quat_to_matrix(q2), pose._rx(0.2) @ pose._rz(0.5), atol=1e-12)


def test_limit_lead_pulls_target_back_along_the_error():
    # target 5 cm ahead in x and 0 in y of the measured point, max lead 3 cm -> 3 cm ahead
    out = limit_lead([0.55, 0.0, 0.3], [0.5, 0.0, 0.3], 0.03)
    np.testing.assert_allclose(out, [0.53, 0.0, 0.3], atol=1e-12)
    np.testing.assert_array_equal(limit_lead([0.51, 0, 0.3], [0.5, 0, 0.3], 0.03), [0.51, 0, 0.3])


def test_state_rpy_matches_the_twin_convention():
    """R = Rz(yaw) Ry(pitch) Rx(roll), roll in [0, 2π): the same numbers as cotrain.envs.robot.ee_state computes."""
    from cotrain.data.rotations import quat_to_rpy as data_quat_to_rpy  # (w, x, y, z), static XYZ, roll unwrapped

    # the Franka home orientation (x, y, z, w) = (1, 0, 0, 0) and a tiny tilt either side: roll stays near π
    np.testing.assert_allclose(pose.state_rpy([1.0, 0, 0, 0]), [np.pi, 0, 0], atol=1e-12)
    for eps in (1e-4, -1e-4):
        q = pose.matrix_to_quat(pose.quat_to_matrix([1.0, 0, 0, 0]) @ pose._rx(eps))
        assert abs(pose.state_rpy(q)[0] - (np.pi + eps)) < 1e-9
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        ref = data_quat_to_rpy(np.array([q[3], q[0], q[1], q[2]]))
        ref[0] = np.remainder(ref[0], 2 * np.pi)
        np.testing.assert_allclose(pose.state_rpy(q), ref, atol=1e-9)


# ---- robot_bridge.target: the tracker's commanded target -------------------------------------------------------
from robot_bridge.target import OutsideWorkspace, TargetLimits, bound_target, clamp_orientation, tracking_exceeded  # noqa: E402

TL = TargetLimits(max_lead=0.03, nominal_rpy=(np.pi, 0.0, 0.0), max_orientation_error=1.0,
                  max_tracking_error=0.045, max_tracking_rotation=0.35)
HOME_Q = np.array([1.0, 0.0, 0.0, 0.0])  # Rx(π): the Franka's top-down home orientation


def test_target_lead_limited_then_clipped_to_the_box():
    # measured x 0.68, wanted 0.75: lead 3 cm -> 0.71, then the box face x <= 0.70 -> 0.70
    t = bound_target([0.75, 0.0, 0.3], HOME_Q, [0.68, 0.0, 0.3], LIM, TL)
    np.testing.assert_allclose(t.xyz, [0.70, 0.0, 0.3], atol=1e-12)
    assert t.reasons == ("lead_limited", "box_clipped")


def test_lead_limiter_cannot_undo_the_box_clip_for_an_arm_just_outside():
    # the arm lags 1 cm outside the face x >= 0.3 and the policy pushes on: the lead limiter alone would put the target
    # at 0.29 - 0.03 = 0.26 (the old ratchet); the box, checked last, puts it on the face
    t = bound_target([0.20, 0.0, 0.3], HOME_Q, [0.29, 0.0, 0.3], LIM, TL)
    np.testing.assert_allclose(t.xyz, [0.30, 0.0, 0.3], atol=1e-12)


def test_hold_just_outside_the_face_targets_the_face():
    # a hold at the measured pose 0.9 mm outside y <= 0.2 targets y = 0.2 exactly
    t = bound_target([0.5, 0.2009, 0.3], HOME_Q, [0.5, 0.2009, 0.3], LIM, TL)
    np.testing.assert_allclose(t.xyz, [0.5, 0.2, 0.3], atol=1e-12)
    assert t.reasons == ("box_clipped",)


def test_arm_further_outside_than_the_lead_is_refused():
    # 5 cm below the floor z >= 0.05: no bounded target can bring it back
    with pytest.raises(OutsideWorkspace, match="50 mm outside"):
        bound_target([0.5, 0.0, 0.0], HOME_Q, [0.5, 0.0, 0.0], LIM, TL)


def test_orientation_clamped_to_the_cone_around_nominal():
    # target = yaw 1.5 rad (about the base z) from home: R = Rz(1.5) Rx(π); relative to nominal R_nᵀR = Rz(-1.5), 1.5 rad
    # > 1.0 -> Rx(π) Rz(-1.0) = Rz(1.0) Rx(π): state rpy (π, 0, 1.0)
    q = pose.matrix_to_quat(pose._rz(1.5) @ pose._rx(np.pi))
    q2, clamped = clamp_orientation(q, TL.nominal_matrix, TL.max_orientation_error)
    assert clamped
    np.testing.assert_allclose(pose.state_rpy(q2), [np.pi, 0.0, 1.0], atol=1e-9)
    q3, clamped = clamp_orientation(pose.matrix_to_quat(pose._rz(0.5) @ pose._rx(np.pi)), TL.nominal_matrix, 1.0)
    assert not clamped and abs(pose.state_rpy(q3)[2] - 0.5) < 1e-9


def test_a_policy_that_keeps_yawing_and_pushing_never_ratchets():
    """40 steps of Δyaw 0.1 rad and Δx −2 cm on the commanded target while the arm does not follow at all (measured
    stays at the start): the target stops at 1.0 rad from nominal and within the lead and the box."""
    xyz, q, measured = np.array([0.31, 0.0, 0.3]), HOME_Q, np.array([0.31, 0.0, 0.3])
    for _ in range(40):
        xyz, q = pose.apply_delta(xyz, q, [-0.02, 0, 0], [0, 0, 0.1])
        t = bound_target(xyz, q, measured, LIM, TL)
        xyz, q = t.xyz, t.quat
    np.testing.assert_allclose(xyz, [0.30, 0.0, 0.3], atol=1e-12)
    assert abs(pose.angle_between(q, HOME_Q) - 1.0) < 1e-9


def test_tracking_error_beyond_the_limits_says_hold():
    assert tracking_exceeded([0.54, 0, 0.3], HOME_Q, [0.5, 0, 0.3], HOME_Q, TL) == ""  # 40 mm < 45 mm
    assert "50 mm" in tracking_exceeded([0.55, 0, 0.3], HOME_Q, [0.5, 0, 0.3], HOME_Q, TL)
    q = pose.matrix_to_quat(pose._rz(0.4) @ pose._rx(np.pi))  # 0.4 rad > 0.35 rad
    assert "0.40 rad" in tracking_exceeded([0.5, 0, 0.3], q, [0.5, 0, 0.3], HOME_Q, TL)


def test_rotation_vector_round_trip_and_half_turn():
    v = np.array([0.3, -0.2, 0.5])
    np.testing.assert_allclose(pose.rotation_vector(pose.rotation_matrix(v)), v, atol=1e-12)
    np.testing.assert_allclose(np.abs(pose.rotation_vector(pose._rx(np.pi))), [np.pi, 0, 0], atol=1e-6)


def test_target_limits_validated():
    with pytest.raises(ValueError, match="max_lead=0"):
        TargetLimits(max_lead=0.0)
