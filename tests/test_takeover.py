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


def test_twin_operator_claim_beats_the_policys_later_frames():
    """The ordering seen on the twin: the operator decides to act on frame F1 while the policy's command for F1 is
    already on its way; the policy then answers F2 before the operator's F1 command arrives (two topics, no order).
    Without a claim, F2 goes to the policy, both operator commands (F1, F2) are stale, and the operator first drives
    F3: two frames late. With the claim made on deciding, F2 is the operator's: one frame late at most."""
    f1, f2, f3 = 10 * MS, 20 * MS, 30 * MS
    late = Takeover()
    assert late.on_policy(stamp_ns=f1, frame_ns=f1) and late.on_policy(stamp_ns=f2, frame_ns=f2)  # env now at F3
    assert not late.on_operator(stamp_ns=f1, now_ns=31 * MS, frame_ns=f3)
    assert not late.on_operator(stamp_ns=f2, now_ns=32 * MS, frame_ns=f3)  # F2: the operator's too, dropped
    assert late.on_operator(stamp_ns=f3, now_ns=33 * MS, frame_ns=f3) and late.stats.stale_dropped == 2

    t = Takeover()
    assert t.on_policy(stamp_ns=f1, frame_ns=f1)  # past the check before the operator claims: F1 is the policy's
    assert t.claim(now_ns=11 * MS) and t.controller == OPERATOR and not t.claim(now_ns=12 * MS)
    assert not t.on_policy(stamp_ns=f2, frame_ns=f2)  # F2 arrives first: dropped, the env waits on F2
    assert not t.on_operator(stamp_ns=f1, now_ns=21 * MS, frame_ns=f2)  # F1 was answered: not sent twice
    assert t.on_operator(stamp_ns=f2, now_ns=22 * MS, frame_ns=f2)  # the operator drives F2
    assert t.stats.to_dict() == {"takeovers": 1, "handbacks": 0, "operator_sent": 1, "policy_sent": 1,
                                 "policy_dropped": 1, "stale_dropped": 1}
    # the hand-back as before: the policy answers the next frame, not a command from before the operator's last one
    assert t.hand_back() and not t.on_policy(stamp_ns=f2, frame_ns=f3) and t.on_policy(stamp_ns=f3, frame_ns=f3)


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
