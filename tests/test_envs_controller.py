"""The native CPU path (`panda_cotrain`) against ManiSkill's reference maths (`panda_cotrain_maniskill`): same TCP
trajectory under the same actions, same state, same grasp and contact predicates; and the pure helpers by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sapien
import torch

from cotrain.data.spec import STATE_KEY
from cotrain.envs import load_task_config, make_expert, make_task_env
from cotrain.envs.controller import delta_target, euler_xyz_to_quat
from cotrain.envs.robot import MANISKILL_ROBOT_UID, ROBOT_UID, ManiSkillCotrainPanda, angle_between, tcp_state

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mani_skill"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:sapien"),
]
TCP_TOLERANCE = 1e-4
"""Largest allowed TCP distance (m) between the two paths at any step of an episode: 0.1 mm."""


def test_euler_xyz_quaternion_by_hand():
    # Rx(π/2): (cos π/4, sin π/4, 0, 0); Rz(π/2): (cos π/4, 0, 0, sin π/4)
    np.testing.assert_allclose(euler_xyz_to_quat(math.pi / 2, 0, 0), [math.sqrt(0.5), math.sqrt(0.5), 0, 0])
    np.testing.assert_allclose(euler_xyz_to_quat(0, 0, math.pi / 2), [math.sqrt(0.5), 0, 0, math.sqrt(0.5)])
    # intrinsic X then Y: Rx(π/2)·Ry(π/2) maps the body z axis to (1, 0, 0) and the body x axis to (0, 1, 0)
    m = sapien.Pose(q=euler_xyz_to_quat(math.pi / 2, math.pi / 2, 0)).to_transformation_matrix()[:3, :3]
    np.testing.assert_allclose(m @ [0, 0, 1], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(m @ [1, 0, 0], [0, 1, 0], atol=1e-6)


def test_delta_target_translates_and_rotates_in_the_base_frame():
    down = sapien.Pose(p=[0.5, 0.0, 0.2], q=[0, 1, 0, 0])  # TCP pointing down (Rx(π))
    target = delta_target(down, np.array([0.01, -0.02, 0.03, 0.0, 0.0, math.pi / 2]))
    np.testing.assert_allclose(target.p, [0.51, -0.02, 0.23], atol=1e-6)
    # yaw +π/2 about the base z axis, applied after Rx(π): R = Rz(π/2)·Rx(π); its x axis is the base y axis
    np.testing.assert_allclose(target.to_transformation_matrix()[:3, 0], [0, 1, 0], atol=1e-6)


def test_tcp_state_and_angle_by_hand():
    yaw, pitch, roll = 0.3, -0.2, math.pi
    rz = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    ry = np.array([[math.cos(pitch), 0, math.sin(pitch)], [0, 1, 0], [-math.sin(pitch), 0, math.cos(pitch)]])
    rx = np.array([[1, 0, 0], [0, math.cos(roll), -math.sin(roll)], [0, math.sin(roll), math.cos(roll)]])
    transform = np.eye(4)
    transform[:3, :3] = rz @ ry @ rx
    state = tcp_state(np.array([0.1, 0.2, 0.3]), transform, np.array([0.04, 0.039]))
    np.testing.assert_allclose(state, [0.1, 0.2, 0.3, math.pi, pitch, yaw, 0.04, 0.039], atol=1e-9)
    assert angle_between(np.array([0.0, 1, 0]), np.array([0.0, 3, 3])) == pytest.approx(45.0)
    assert angle_between(np.array([0.0, 1, 0]), np.zeros(3)) == pytest.approx(90.0)  # no force: no direction


@pytest.mark.parametrize("task", ["pick_place", "open_drawer", "push_cube"])
def test_native_path_follows_the_reference_tcp_trajectory(task):
    """The expert drives the reference env; the native env replays the same actions. Each env is reused over the
    seeds with the same history, so both start every episode from the same PhysX state."""
    cfg = load_task_config(task)
    ref, new = (make_task_env(cfg, "sim", obs_mode="state", robot_uid=uid) for uid in (MANISKILL_ROBOT_UID, ROBOT_UID))
    assert type(ref.agent) is ManiSkillCotrainPanda and type(new.agent) is not ManiSkillCotrainPanda
    expert = make_expert(task, ref.domain, teleop_noise=False)
    worst, state_worst = 0.0, 0.0
    for seed in (0, 1):
        ref.reset(seed=seed)
        new.reset(seed=seed)
        expert.reset(ref, seed)
        for _ in range(cfg.max_episode_steps):
            action = expert.act(ref)
            _, reward_ref, *_, info_ref = ref.step(action)
            obs_new, reward_new, *_, info_new = new.step(action)
            worst = max(worst, float(torch.linalg.norm(ref.tcp_pos - new.tcp_pos)))
            # the same maths on the same env: native state vs ManiSkill's, predicates alike
            reference_state = ManiSkillCotrainPanda.ee_state(new.agent)
            state_worst = max(state_worst, float((reference_state - obs_new[STATE_KEY]).abs().max()))
            assert info_ref["success"].tolist() == info_new["success"].tolist()
            assert info_ref["milestone"].tolist() == info_new["milestone"].tolist()
            torch.testing.assert_close(reward_new, reward_ref)
        assert bool(info_new["success"][0]), f"{task} expert failed on seed {seed} on the native path"
    ref.close()
    new.close()
    assert worst < TCP_TOLERANCE, f"TCP differs by {worst * 1e3:.4f} mm"
    assert state_worst < 1e-5


def test_native_grasp_predicate_equals_maniskills_while_grasping():
    cfg = load_task_config("pick_place")
    env = make_task_env(cfg, "sim", obs_mode="state")
    expert = make_expert("pick_place", env.domain, teleop_noise=False)
    env.reset(seed=0)
    expert.reset(env, 0)
    grasped = []
    for _ in range(40):
        env.step(expert.act(env))
        native = bool(env.agent.is_grasping(env.obj)[0])
        assert native == bool(ManiSkillCotrainPanda.is_grasping(env.agent, env.obj)[0])
        for ours, theirs in zip(env.agent.finger_contact_forces(env.obj),
                                ManiSkillCotrainPanda.finger_contact_forces(env.agent, env.obj)):
            torch.testing.assert_close(ours, theirs)
        grasped.append(native)
    env.close()
    assert any(grasped) and not all(grasped)  # the comparison covered both answers
