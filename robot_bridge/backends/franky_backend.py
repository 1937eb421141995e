"""A Franka through franky (or franky-sim on 127.0.0.x): Cartesian impedance tracking of delta-pose targets.

Measured on franky-sim (MuJoCo FR3, targets moved 3 mm per 100 ms): `CartesianImpedanceTracker.set_target` at
1500 N/m tracks within 4.6 mm mean / 6.8 mm max and settles to 1.4 mm; 500 N/m gives 10.5 / 12.3 / 6.4 mm and
3000 N/m is unstable in the simulator. Pre-empting asynchronous `CartesianMotion`s at 10 Hz failed
("Motion planner failed with error code -110") or tracked with tens of mm of error, so the tracker is the one
used. Deltas are integrated on the commanded target (the tracker lags a step by design, so deltas from the
measured pose would move ~0.75 mm per 5 mm commanded), and the target never leads the measured position by more
than `max_lead` (bounds the spring force). `hold`, and any zero-motion action (the watchdog's holds,
rejected actions), reset the target to the measured pose. The gripper is binary like the training action's sign: < 0 grasps (force-controlled), >= 0 opens; a command
is sent only when the sign changes.
"""

from __future__ import annotations

import time

import numpy as np

from robot_bridge import pose
from robot_bridge.backends.base import ArmBackend, ArmReading
from robot_bridge.params import FrankaParams
from robot_bridge.safety import limit_lead

GRIPPER_READ_PERIOD_S = 0.1  # a gripper state read costs ~2 ms; the width changes slowly


class FrankyBackend(ArmBackend):
    def __init__(self, p: FrankaParams) -> None:
        self.p = p
        self._robot = None
        self._gripper = None
        self._tracker = None
        self._gripper_closed: bool | None = None
        self._target_xyz: np.ndarray | None = None
        self._target_quat: np.ndarray | None = None
        self._width = 0.0
        self._width_t = -np.inf

    def connect(self) -> None:
        import franky

        cfg = franky.RealtimeConfig.Enforce if self.p.realtime else franky.RealtimeConfig.Ignore
        self._robot = franky.Robot(self.p.robot_ip, realtime_config=cfg)
        self._gripper = franky.Gripper(self.p.robot_ip)

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

    def start(self) -> None:
        import franky

        if self._robot.has_errors:
            self._robot.recover_from_errors()
        self._tracker = franky.CartesianImpedanceTracker(
            self._robot,
            translational_stiffness=self.p.translational_stiffness,
            rotational_stiffness=self.p.rotational_stiffness,
        )  # seeded at the current pose: starting moves nothing
        self._reset_target()

    def _reset_target(self):
        ee = self._robot.current_pose.end_effector_pose
        self._target_xyz, self._target_quat = np.ravel(ee.translation).copy(), np.ravel(ee.quaternion).copy()
        return ee

    def reference_xyz(self) -> np.ndarray:
        if self._target_xyz is None:
            return np.ravel(self._robot.current_pose.end_effector_pose.translation).copy()
        return self._target_xyz.copy()

    def apply(self, action: np.ndarray) -> None:
        import franky

        if not np.any(action[0:6]):  # zero motion (a hold, a rejected action): stop where the arm is, not at the
            self.hold()              # target it may still lag behind
            self._command_gripper(action[6])
            return
        xyz, quat = pose.apply_delta(self._target_xyz, self._target_quat, action[0:3], action[3:6])
        measured = np.ravel(self._robot.current_pose.end_effector_pose.translation)
        self._target_xyz, self._target_quat = limit_lead(xyz, measured, self.p.max_lead), quat
        self._tracker.set_target(franky.Affine(self._target_xyz, self._target_quat))
        self._command_gripper(action[6])

    def _command_gripper(self, g: float) -> None:
        closed = bool(g < 0.0)
        if closed != self._gripper_closed:
            self._gripper_closed = closed
            if closed:
                self._gripper.grasp_async(0.0, self.p.gripper_speed, self.p.gripper_force,
                                          epsilon_inner=0.0, epsilon_outer=self.p.gripper_open_width)
            else:
                self._gripper.move_async(self.p.gripper_open_width, self.p.gripper_speed)

    def hold(self) -> None:
        self._tracker.set_target(self._reset_target())

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
                self._tracker, self._gripper, self._robot = None, None, None

    @property
    def in_control(self) -> bool:
        return self._tracker is not None and bool(self._robot.is_in_control)
