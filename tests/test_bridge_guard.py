"""robot_bridge.arm_guard and robot_bridge.gripper without ROS: hand-worked states, and the e-stop answering while
another thread is stuck inside a backend call."""

from __future__ import annotations

import threading
import time

import numpy as np

from robot_bridge.arm_guard import ArmGuard
from robot_bridge.backends.base import ArmBackend, ArmReading
from robot_bridge.gripper import GripperWorker
from robot_bridge.safety import SafetyLimits


class FakeArm(ArmBackend):
    def __init__(self):
        self.calls, self.xyz, self.controlled, self.fail_apply = [], np.array([0.5, 0.0, 0.3]), False, False
        self.block_apply: threading.Event | None = None  # set: `apply` waits for it (a driver call that hangs)
        self.halts = 0
        self.tracking = ""

    def connect(self):
        self.calls.append("connect")

    def read(self):
        return ArmReading(self.xyz.copy(), np.array([1.0, 0, 0, 0]), np.zeros(7), np.zeros(2))

    def reference_xyz(self):
        return self.xyz.copy()

    def start(self):
        self.calls.append("start")
        self.controlled = True

    def apply(self, action):
        if self.fail_apply:
            raise ConnectionError("reflex")
        self.calls.append(("apply", np.round(action, 6).tolist()))
        if self.block_apply is not None:
            self.block_apply.wait(10.0)

    def halt(self):
        self.halts += 1

    def tracking_error(self):
        return self.tracking

    def hold(self):
        self.calls.append("hold")

    def stop(self):
        self.calls.append("stop")
        self.controlled = False

    def close(self):
        self.calls.append("close")

    @property
    def in_control(self):
        return self.controlled


LIM = SafetyLimits(workspace_min=(0.3, -0.2, 0.05), workspace_max=(0.7, 0.2, 0.5), max_translation=0.01, max_rotation=0.1)


def test_guard_ignores_before_activate_filters_after_and_times_out_to_hold():
    arm = FakeArm()
    g = ArmGuard(arm, LIM, command_timeout=0.3)
    assert g.on_action(np.zeros(7), 0.0) is None and g.stats.ignored == 1 and arm.calls == []
    assert g.activate(1.0)
    cmd = g.on_action([0.03, 0.04, 0, 0, 0, 0, 1.0], 1.1)
    assert arm.calls[-1] == ("apply", [0.006, 0.008, 0.0, 0.0, 0.0, 0.0, 1.0]) and cmd.reasons == ("translation_scaled",)
    g.on_timer(1.3)  # 0.2 s since the last command: still active
    assert g.state == "active"
    g.on_timer(1.45)  # 0.35 s > 0.3 s timeout
    assert g.state == "holding" and arm.calls[-1] == "hold" and g.stats.timeouts == 1
    g.on_action([np.nan] * 7, 1.5)  # a rejected action is a hold with the last gripper
    assert arm.calls[-1] == ("apply", [0.0] * 6 + [1.0]) and g.stats.rejected == 1


def test_guard_estop_latches_and_backend_errors_fault_without_raising():
    arm = FakeArm()
    g = ArmGuard(arm, LIM, command_timeout=0.3)
    g.activate(0.0)
    g.estop()
    assert g.state == "estopped" and arm.halts == 1 and arm.calls[-1] == "start"  # halted at once; the full stop:
    g.on_timer(0.05)
    assert arm.calls[-1] == "stop"                                                  # on the next timer tick
    assert g.on_action(np.zeros(7), 0.1) is None and not g.activate(0.2)
    assert g.reset() and g.state == "inactive" and g.activate(0.3)
    arm.fail_apply = True
    assert g.on_action(np.zeros(7), 0.4) is None  # no exception escapes
    assert g.state == "fault" and "reflex" in g.stats.errors[-1] and arm.calls[-1] == "stop"
    arm.fail_apply = False
    arm.controlled = True
    assert g.reset() and g.activate(0.5)
    arm.controlled = False  # the arm left control on its own (a reflex)
    assert g.on_timer(0.6) is None and g.state == "fault"




def test_estop_answers_while_a_command_is_stuck_in_the_backend():
    """The deadlock: a command thread holds the guard's lock inside a backend call that does not return. The e-stop
    answers within 100 ms, halts the arm, and the stuck command, once it returns, reports nothing and halts again."""
    arm = FakeArm()
    g = ArmGuard(arm, LIM, command_timeout=0.3)
    g.activate(0.0)
    arm.block_apply = threading.Event()
    result = []
    t = threading.Thread(target=lambda: result.append(g.on_action([0.005, 0, 0, 0, 0, 0, -0.29], 0.1)))
    t.start()
    while not any(isinstance(c, tuple) for c in arm.calls):
        time.sleep(0.001)  # the command is inside `apply`, holding the lock
    t0 = time.monotonic()
    g.estop()
    assert time.monotonic() - t0 < 0.1 and g.state == "estopped" and arm.halts == 1
    arm.block_apply.set()
    t.join(5.0)
    assert result == [None] and arm.halts == 2 and g.stats.applied == 0
    assert g.on_action(np.zeros(7), 0.2) is None and g.stats.ignored == 1


def test_close_does_not_wait_for_a_stuck_backend_call():
    arm = FakeArm()
    g = ArmGuard(arm, LIM, command_timeout=0.3, close_timeout=0.2)
    g.activate(0.0)
    arm.block_apply = threading.Event()
    t = threading.Thread(target=g.on_action, args=([0.005, 0, 0, 0, 0, 0, 1.0], 0.1), daemon=True)
    t.start()
    while not any(isinstance(c, tuple) for c in arm.calls):
        time.sleep(0.001)
    t0 = time.monotonic()
    assert not g.close_bounded()  # gave up on the lock after 0.2 s, halted the arm without it
    assert 0.15 < time.monotonic() - t0 < 0.5 and arm.halts == 1 and "close" not in arm.calls
    arm.block_apply.set()
    t.join(5.0)


def test_tracking_error_holds_and_a_moving_command_resumes():
    arm = FakeArm()
    g = ArmGuard(arm, LIM, command_timeout=0.3)
    g.activate(0.0)
    g.on_action([0.005, 0, 0, 0, 0, 0, 1.0], 0.1)
    arm.tracking = "tracking error 50 mm / 0.00 rad"
    g.on_timer(0.15)
    assert g.state == "holding" and arm.calls[-1] == "hold" and g.stats.tracking_holds == 1
    assert g.hold_reason.startswith("tracking error 50 mm")
    arm.tracking = ""
    g.on_action(np.zeros(7), 0.2)  # a zero-motion command keeps it holding
    assert g.state == "holding"
    g.on_action([0.005, 0, 0, 0, 0, 0, 1.0], 0.3)
    assert g.state == "active" and g.hold_reason == ""


def test_gripper_worker_never_blocks_the_caller_and_sends_the_latest():
    """open (blocks: a gripper move in progress), then grasp, open, grasp posted meanwhile: each post returns at once;
    once the open returns, only the latest wanted state (grasp) is sent."""
    sent, release = [], threading.Event()

    def send(closed):
        sent.append(closed)
        if len(sent) == 1:
            release.wait(5.0)

    w = GripperWorker(send)
    w.post(False)
    while not sent:
        time.sleep(0.001)
    t0 = time.monotonic()
    for closed in (True, False, True):
        w.post(closed)
    assert time.monotonic() - t0 < 0.01 and w.busy_s > 0
    release.set()
    deadline = time.monotonic() + 5.0
    while len(sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    assert sent == [False, True]
    assert w.close(1.0)


def test_gripper_worker_left_blocked_does_not_hold_close():
    w = GripperWorker(lambda closed: threading.Event().wait(10.0))
    w.post(True)
    time.sleep(0.02)
    t0 = time.monotonic()
    assert not w.close(0.1) and time.monotonic() - t0 < 0.3  # a daemon: it cannot keep the process alive
