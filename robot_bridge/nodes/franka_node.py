"""franka node: a lifecycle node that owns the arm. Publishes its state always; moves it only while active.

Subscribes  /action (JointState named vector)           -> ArmGuard.on_action -> backend
Publishes   /franka/joint_states, /franka/ee_pose       at state_rate_hz (from configure on)
            /franka/applied_action                       every command actually sent (after the safety filter)
            /franka/status                               JSON: guard state and counters, on every change
Services    /franka/estop, /franka/reset (std_srvs/Trigger); lifecycle: /franka/change_state, /franka/get_state
A twin backend also publishes its camera on /camera/image_raw (it is the camera of the simulated world).
"""

from __future__ import annotations

import time

import rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robot_bridge import messages, topics
from robot_bridge.nodes import run
from robot_bridge.arm_guard import ArmGuard
from robot_bridge.backends import make_backend
from robot_bridge.params import FrankaParams, declare
from robot_bridge.safety import SafetyLimits

NODE_NAME = "franka"


def limits_from(p: FrankaParams) -> SafetyLimits:
    return SafetyLimits(
        workspace_min=tuple(p.workspace_min), workspace_max=tuple(p.workspace_max),
        max_translation=p.max_translation, max_rotation=p.max_rotation,
    )


class FrankaNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare(self, FrankaParams)
        self.guard: ArmGuard | None = None
        self._timer = None
        self._last_status = ""
        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, 10)
        self.pose_pub = self.create_publisher(messages.PoseStamped, topics.EE_POSE, 10)
        self.applied_pub = self.create_publisher(JointState, topics.APPLIED_ACTION, 10)
        self.status_pub = self.create_publisher(String, topics.FRANKA_STATUS, messages.STATUS_QOS)
        self.create_subscription(JointState, topics.ACTION, self._on_action, 10)
        self.create_service(Trigger, "~/estop", self._on_estop)
        self.create_service(Trigger, "~/reset", self._on_reset)
        if self.p.autostart:
            self.trigger_configure()
            self.trigger_activate()

    # ---- lifecycle transitions ----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            backend = make_backend(self.p)
            backend.connect()
        except Exception as e:  # noqa: BLE001
            self.get_logger().error(f"configure: cannot connect the {self.p.backend} backend: {e}")
            return TransitionCallbackReturn.FAILURE
        self.guard = ArmGuard(backend, limits_from(self.p), self.p.command_timeout_ms / 1000.0)
        self._timer = self.create_timer(1.0 / self.p.state_rate_hz, self._on_timer)
        self._publish_status()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ok = self.guard.activate(time.monotonic())
        self._publish_status()
        if not ok:
            self.get_logger().error(f"activate refused in state {self.guard.state}: {self.guard.stats.errors[-1:]}")
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.guard.deactivate()
        self._publish_status()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._shutdown_backend()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._shutdown_backend()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._shutdown_backend()
        super().destroy_node()

    def _shutdown_backend(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self.guard is not None:
            try:
                self.guard.close()
            except Exception as e:  # noqa: BLE001
                self.get_logger().error(f"closing the backend failed: {e}")

    @property
    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    # ---- callbacks ----------------------------------------------------------------------------------
    def _on_action(self, msg: JointState) -> None:
        if self.guard is None:
            return
        try:
            action = messages.msg_to_action(msg)
        except ValueError as e:
            self.get_logger().error(f"{topics.ACTION}: {e}", throttle_duration_sec=1.0)
            action = None  # refused: a hold is sent if the arm is moving
        cmd = self.guard.on_action(action, time.monotonic())
        if cmd is not None:
            self.applied_pub.publish(messages.action_to_msg(cmd.action, messages.stamp_to_ns(msg.header.stamp)))
        self._publish_status()

    def _on_timer(self) -> None:
        if self.guard is None:
            return
        reading = self.guard.on_timer(time.monotonic())
        if reading is not None:
            now = self.get_clock().now().nanoseconds
            self.joint_pub.publish(messages.joint_state_msg(reading.q, reading.fingers, now))
            self.pose_pub.publish(messages.pose_msg(reading.xyz, reading.quat, now))
        self._publish_status()

    def _on_estop(self, request, response):
        if self.guard is not None:
            self.guard.estop()
        self._publish_status()
        response.success, response.message = True, "arm stopped; call reset, then activate again"
        return response

    def _on_reset(self, request, response):
        ok = self.guard is not None and self.guard.reset()
        if ok and self.lifecycle_state == "active":
            ok = self.guard.activate(time.monotonic())
        self._publish_status()
        response.success = bool(ok)
        response.message = f"state {self.guard.state if self.guard else 'unconfigured'}"
        return response

    def _publish_status(self) -> None:
        g = self.guard
        fields = {"state": g.state if g else "unconfigured"}
        if g is not None:
            s = g.stats
            fields |= {"applied": s.applied, "rejected": s.rejected, "modified": s.modified, "ignored": s.ignored,
                       "timeouts": s.timeouts, "errors": s.errors[-3:], "last_reasons": list(g.last_reasons)}
        msg = messages.status_msg(**fields)
        if msg.data != self._last_status:
            self._last_status = msg.data
            self.status_pub.publish(msg)


def main(args=None) -> None:
    run(FrankaNode, args)


if __name__ == "__main__":
    main()
