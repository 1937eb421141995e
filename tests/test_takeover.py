"""Take-over and hand-back as plain logic (robot_bridge/takeover.py) and through the arm guard: the operator's first
command is the next one sent, a policy command from before it never is, and the target continues across a switch."""

import numpy as np

from robot_bridge.arm_guard import ArmGuard
from robot_bridge.safety import SafetyLimits
from robot_bridge.takeover import OPERATOR, POLICY, Takeover
from robot_bridge.teleop_keys import KeyTeleop

MS = 1_000_000


def test_operator_takes_over_at_once_and_hands_back_by_request():
    t = Takeover()
    assert t.on_policy(stamp_ns=0)  # no operator yet: the policy's watchdog hold (stamp 0) goes to the arm
    assert t.on_policy(stamp_ns=100 * MS)  # the policy drives
    assert t.on_operator(stamp_ns=150 * MS, now_ns=160 * MS) and t.controller == OPERATOR  # its first command goes
    assert not t.on_policy(stamp_ns=200 * MS)  # fresh, but the operator drives
    assert t.on_operator(stamp_ns=250 * MS, now_ns=260 * MS)
    assert t.hand_back() and t.controller == POLICY and not t.hand_back()
    # a chunk computed before the operator's last command (stamp 240 ms < 260 ms) is never executed; a watchdog hold
    # (stamp 0) carrying the policy's old gripper neither; an observation after it is
    assert not t.on_policy(stamp_ns=240 * MS) and not t.on_policy(stamp_ns=0)
    assert t.on_policy(stamp_ns=300 * MS)
    assert t.stats.to_dict() == {"takeovers": 1, "handbacks": 1, "operator_sent": 2, "policy_sent": 3,
                                 "policy_dropped": 3, "stale_dropped": 0}
    t.reset()  # a new episode
    assert t.controller == POLICY and t.on_policy(stamp_ns=1)


def test_twin_frames_are_answered_once():
    """The env is the clock: the policy answered frame F (now F' is current); the operator's answer to F takes control
    but is not sent (it would step the env a second time on F); its answer to F' is."""
    t = Takeover()
    frame = 10 * MS
    assert t.on_policy(stamp_ns=frame, frame_ns=frame)
    frame = 20 * MS
    assert not t.on_operator(stamp_ns=10 * MS, now_ns=21 * MS, frame_ns=frame) and t.controller == OPERATOR
    assert t.on_operator(stamp_ns=frame, now_ns=22 * MS, frame_ns=frame)
    assert t.stats.stale_dropped == 1 and t.stats.operator_sent == 1


class FakeArm:
    """Integrates deltas on its commanded target (as the franky backend does)."""

    def __init__(self):
        self.target = np.array([0.4, 0.0, 0.3])
        self.sent = []
        self.in_control = True

    def start(self): pass
    def stop(self): pass
    def halt(self): pass
    def hold(self): pass
    def close(self): pass
    def read(self): return None
    def tracking_error(self): return ""
    def reference_xyz(self): return self.target.copy()

    def apply(self, action):
        self.target = self.target + action[:3]
        self.sent.append(self.target.copy())


def test_switch_continues_the_target_and_filters_both_sources():
    """Policy steps +1 cm x; the operator takes over with an oversize step (filtered to 2 cm like any command) and the
    target goes on from where the policy left it: no jump, every step within max_translation."""
    arm = FakeArm()
    guard = ArmGuard(arm, SafetyLimits(workspace_min=(-1, -1, 0), workspace_max=(1, 1, 1), max_translation=0.02,
                                       max_rotation=0.1), command_timeout=1.0)
    guard.activate(0.0)
    t = Takeover()
    commands = [("policy", 1, [0.01, 0, 0]), ("policy", 2, [0.01, 0, 0]), ("operator", 3, [0, 0.5, 0]),
                ("policy", 3, [0.01, 0, 0]), ("operator", 4, [0, 0.01, 0])]
    for k, (who, stamp, step) in enumerate(commands):
        ok = t.on_policy(stamp) if who == "policy" else t.on_operator(stamp, now_ns=stamp)
        if ok:
            guard.on_action(np.array([*step, 0, 0, 0, 1.0]), now=0.1 * k)
    sent = np.array(arm.sent)
    np.testing.assert_allclose(sent, [[0.41, 0, 0.3], [0.42, 0, 0.3], [0.42, 0.02, 0.3], [0.42, 0.03, 0.3]], atol=1e-9)
    assert np.all(np.linalg.norm(np.diff(np.vstack([[0.4, 0, 0.3], sent]), axis=0), axis=1) <= 0.02 + 1e-12)


def test_keys_count_as_input_only_while_pressed():
    k = KeyTeleop(0.05, 0.3, key_hold_s=0.15)
    assert not k.has_input(0.0)
    k.on_key("w", 1.0)
    assert k.has_input(1.1) and not k.has_input(1.2)  # held 0.15 s after the press
    k.follow_gripper(-0.7)  # the policy closed the gripper: a take-over starts closed
    assert k.gripper == -1.0
    assert k.on_key(" ", 2.0) is None and k.has_input(2.0) and k.gripper == 1.0 and not k.has_input(2.01)
    assert k.on_key("h", 3.0) == "/franka/hand_back"
