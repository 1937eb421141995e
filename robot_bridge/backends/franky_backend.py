"""A Franka through franky (or franky-sim on 127.0.0.x): Cartesian impedance tracking of delta-pose targets.

Measured on franky-sim (MuJoCo FR3, targets moved 3 mm per 100 ms): `CartesianImpedanceTracker.set_target` at
1500 N/m tracks within 4.6 mm mean / 6.8 mm max and settles to 1.4 mm; 500 N/m gives 10.5 / 12.3 / 6.4 mm and
3000 N/m is unstable in the simulator. Pre-empting asynchronous `CartesianMotion`s at 10 Hz failed
("Motion planner failed with error code -110") or tracked with tens of mm of error, so the tracker is the one
used. Deltas are integrated on the commanded target (the tracker lags a step by design, so deltas from the
measured pose would move ~0.75 mm per 5 mm commanded); every target goes through `target.bound_target` (lead, then
the workspace box, then the orientation bound around the nominal orientation) before it reaches the tracker.
`hold`, and any zero-motion action (the watchdog's holds, rejected actions), target the measured pose, bounded the
same way. `tracking_error` tells the guard when the arm stopped following its target.
The gripper is binary like the training action's sign: < 0 grasps (force-controlled), >= 0 opens; a command is
posted to a `gripper.GripperWorker` only when the sign changes, so a gripper call (which can block for a whole
gripper move, or on franky-sim forever) never runs on the arm's control path. `halt` (the e-stop) enqueues
franky's torque-stop ramp without waiting for the arm to come to rest. Only franky's control loop runs at real-time
priority (`realtime`: the node's own threads stay at normal priority).
"""

from __future__ import annotations

import time

import numpy as np

from robot_bridge import pose
from robot_bridge.backends.base import ArmBackend, ArmReading
from robot_bridge.backends.realtime import realtime_scheduling, scheduling_restored
from robot_bridge.gripper import GripperWorker
from robot_bridge.params import FrankaParams
from robot_bridge.target import bound_target, tracking_exceeded

GRIPPER_READ_PERIOD_S = 0.1  # a gripper state read costs ~2 ms; the width changes slowly


class FrankyBackend(ArmBackend):
    def __init__(self, p: FrankaParams) -> None:
        self.p, self.box, self.target_limits = p, p.safety_limits(), p.target_limits()
        self._robot = None
        self._gripper = None
        self._gripper_worker: GripperWorker | None = None
        self._tracker = None
        self._gripper_closed: bool | None = None
        self._target_xyz: np.ndarray | None = None
        self._target_quat: np.ndarray | None = None
        self._width = 0.0
        self._width_t = -np.inf
        self.last_target_reasons: tuple[str, ...] = ()

    def connect(self) -> None:
        import franky

        cfg = franky.RealtimeConfig.Enforce if self.p.realtime else franky.RealtimeConfig.Ignore
        with scheduling_restored():  # the constructor makes its caller real-time (see robot_bridge.backends.realtime)
            self._robot = franky.Robot(self.p.robot_ip, realtime_config=cfg)
        self._gripper = franky.Gripper(self.p.robot_ip)
        self._gripper_worker = GripperWorker(self._send_gripper)

    def read(self) -> ArmReading:
        ee = self._robot.current_pose.end_effector_pose
        q = np.asarray(self._robot.current_joint_positions, dtype=np.float64)
        now = time.monotonic()
        if now - self._width_t >= GRIPPER_READ_PERIOD_S:
            self._width, self._width_t = float(self._gripper.width), now
        return ArmReading(
            xyz=np.asarray(ee.translation, dtype=np.float64).reshape(3),
            quat=np.asarray(ee.quaternion, dtype=np.float64).reshape(4),
            q=q.reshape(7),
            fingers=np.full(2, self._width / 2.0),
        )

    def _measured(self) -> tuple[np.ndarray, np.ndarray]:
        ee = self._robot.current_pose.end_effector_pose
        return np.ravel(ee.translation).astype(np.float64), np.ravel(ee.quaternion).astype(np.float64)

    def start(self) -> None:
        import franky

        if self._robot.has_errors:
            self._robot.recover_from_errors()
        with realtime_scheduling():  # the control thread the tracker starts inherits the real-time policy
            self._tracker = franky.CartesianImpedanceTracker(
                self._robot,
                translational_stiffness=self.p.translational_stiffness,
                rotational_stiffness=self.p.rotational_stiffness,
            )  # seeded at the current pose
        self.hold()  # the bounded measured pose (an arm a few mm outside the box is pulled onto its face)

    def reference_xyz(self) -> np.ndarray:
        if self._target_xyz is None:
            return self._measured()[0]
        return self._target_xyz.copy()

    def _set_target(self, xyz, quat, measured_xyz) -> None:
        import franky

        t = bound_target(xyz, quat, measured_xyz, self.box, self.target_limits)
        self._target_xyz, self._target_quat, self.last_target_reasons = t.xyz, t.quat, t.reasons
        self._tracker.set_target(franky.Affine(t.xyz, t.quat))

    def apply(self, action: np.ndarray) -> None:
        if not np.any(action[0:6]):  # zero motion (a hold, a rejected action): stop where the arm is, not at the
            self.hold()              # target it may still lag behind
        else:
            xyz, quat = pose.apply_delta(self._target_xyz, self._target_quat, action[0:3], action[3:6])
            self._set_target(xyz, quat, self._measured()[0])
        self._command_gripper(action[6])

    def _command_gripper(self, g: float) -> None:
        closed = bool(g < 0.0)
        if closed != self._gripper_closed:
            self._gripper_closed = closed
            self._gripper_worker.post(closed)

    def _send_gripper(self, closed: bool) -> None:
        """(The gripper worker's thread.) Returns when franky accepted the command; it may block for a move."""
        if closed:
            self._gripper.grasp_async(0.0, self.p.gripper_speed, self.p.gripper_force,
                                      epsilon_inner=0.0, epsilon_outer=self.p.gripper_open_width)
        else:
            self._gripper.move_async(self.p.gripper_open_width, self.p.gripper_speed)

    def hold(self) -> None:
        xyz, quat = self._measured()
        self._set_target(xyz, quat, xyz)

    def tracking_error(self) -> str:
        if self._target_xyz is None:
            return ""
        xyz, quat = self._measured()
        return tracking_exceeded(self._target_xyz, self._target_quat, xyz, quat, self.target_limits)

    def halt(self) -> None:
        import franky

        robot = self._robot
        if robot is not None and robot.is_in_control:
            robot.move(franky.TorqueStopMotion(), asynchronous=True)  # ramp into damping; does not wait

    def stop(self) -> None:
        tracker, self._tracker = self._tracker, None
        self._target_xyz = self._target_quat = None
        if tracker is not None and self._robot.is_in_control:
            tracker.stop()  # torque ramp into damping; returns when the arm is at rest
        if self._robot.is_in_control:
            self._robot.stop()

    def close(self) -> None:
        if self._robot is not None:
            try:
                self.stop()
            finally:
                if self._gripper_worker is not None:
                    self._gripper_worker.close()
                self._tracker, self._gripper, self._robot, self._gripper_worker = None, None, None, None

    def status(self) -> dict:
        """How the last target was bounded, the target orientation, how long a gripper call has been running."""
        q, worker = self._target_quat, self._gripper_worker
        return {"target_reasons": list(self.last_target_reasons),
                "target_quat": None if q is None else [round(float(v), 5) for v in q],
                "gripper_busy_s": round(worker.busy_s, 2) if worker is not None else 0.0}

    @property
    def in_control(self) -> bool:
        return self._tracker is not None and bool(self._robot.is_in_control)
