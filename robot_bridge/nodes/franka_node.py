"""franka node: a lifecycle node that owns the arm. Publishes its state always; moves it only while active.

Subscribes  /action (JointState named vector)           -> Takeover -> ArmGuard.on_action -> backend
            /teleop/action (same layout: an operator)   -> takes control from the policy at once (takeover.py);
                                                         an in-process operator claims it on deciding (operator_claims)
Publishes   /franka/joint_states, /franka/ee_pose       at state_rate_hz (from configure on)
            /franka/applied_action                       every command actually sent (after the safety filter);
                                                         header.frame_id = who sent it: 'policy' or 'operator'
            /franka/status                               JSON: guard state, counters and (while moving) the position the
                                                         next delta moves from, on every change
Services    /franka/estop, /franka/reset, /franka/hand_back (control back to the policy) (std_srvs/Trigger);
            lifecycle: /franka/change_state, /franka/get_state
            The e-stop takes no lock and has its own callback group: it answers and halts the arm while another
            callback is busy (run the node with a multi-threaded executor, as `nodes.run` and deploy do). After it,
            `reset` leaves the arm and the lifecycle inactive: `activate` re-arms.
A twin backend is also the camera of its simulated world: each new frame (episode start, every env step) is published
on /camera/image_raw with the reading it was taken with on /franka/ee_pose + /franka/joint_states (one stamp, the
state first) and the env's instruction on /task (latched); until a command answers it, the state timer publishes the
same frame again with its own stamp (nodes started later, or a policy started later, still get it; the env waits, so
it is still current), and otherwise nothing (a reading stamped later than a newer frame would be a stale state). /franka/status carries the twin's episode (steps, done, success).
"""

from __future__ import annotations

import time

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robot_bridge import messages, topics
from robot_bridge.nodes import run
from robot_bridge.arm_guard import ArmGuard
from robot_bridge.backends import backend_kind, make_backend
from robot_bridge.params import FrankaParams, declare
from robot_bridge.takeover import OPERATOR, POLICY, Takeover

NODE_NAME = "franka"


class FrankaNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare(self, FrankaParams)
        self.guard: ArmGuard | None = None
        self.takeover = Takeover()
        self._timer = None
        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, 10)
        self.pose_pub = self.create_publisher(messages.PoseStamped, topics.EE_POSE, 10)
        self.applied_pub = self.create_publisher(JointState, topics.APPLIED_ACTION, 10)
        self.status = messages.StatusPublisher(self.create_publisher(String, topics.FRANKA_STATUS, messages.STATUS_QOS))
        self._frame_seq = 0  # twin: the last frame published (0 = none)
        self._frame_stamp = 0
        self._frame_answered = True
        if backend_kind(self.p.backend).provides_camera:  # the twin: its frames are the camera
            self.image_pub = self.create_publisher(Image, topics.IMAGE, 2)
            self.task_pub = self.create_publisher(String, topics.TASK, messages.STATUS_QOS)
        # the e-stop has a callback group of its own: it answers while a command or the timer is being handled
        self._control_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(JointState, topics.ACTION, self._on_action, 10, callback_group=self._control_group)
        self.create_subscription(JointState, topics.OPERATOR_ACTION, self._on_operator, 10,
                                 callback_group=self._control_group)
        self.create_service(Trigger, "~/hand_back", self._on_hand_back, callback_group=self._control_group)
        self.create_service(Trigger, "~/estop", self._on_estop, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=self._control_group)
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
        self.guard = ArmGuard(backend, self.p.safety_limits(), self.p.command_timeout_ms / 1000.0)
        self._timer = self.create_timer(1.0 / self.p.state_rate_hz, self._on_timer, callback_group=self._control_group)
        if self._twin is not None:
            self._publish_reading(self._twin.read(), self.get_clock().now().nanoseconds)
        self._publish_status()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.takeover.reset()  # a new episode starts with the policy driving
        ok = self.guard.activate(time.monotonic())
        self._publish_frame()
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
                self.guard.close_bounded()
            except Exception as e:  # noqa: BLE001
                self.get_logger().error(f"closing the backend failed: {e}")

    @property
    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    @property
    def _twin(self):
        """The backend if it is the camera of its world (twin), else None."""
        backend = self.guard.backend if self.guard is not None else None
        return backend if hasattr(backend, "frame") else None

    @property
    def episode(self) -> dict | None:
        """Twin: the current episode (index, seed, instruction, steps, ret, done, success); None otherwise."""
        twin = self._twin
        return twin.episode.to_dict() if twin is not None and twin.episode is not None else None

    # ---- callbacks ----------------------------------------------------------------------------------
    def _on_action(self, msg: JointState) -> None:
        if self.guard is None:
            return
        if not self.takeover.on_policy(messages.stamp_to_ns(msg.header.stamp), self._frame_ns()):
            self._publish_status()  # the operator drives, or the command answers an observation from before it
            return
        self._send(msg, topics.ACTION, POLICY)

    def _on_operator(self, msg: JointState) -> None:
        if self.guard is None or self.guard.state not in ("active", "holding"):
            return
        was = self.takeover.controller
        ok = self.takeover.on_operator(messages.stamp_to_ns(msg.header.stamp), self.get_clock().now().nanoseconds,
                                       self._frame_ns())
        if was != self.takeover.controller:
            self.get_logger().info("operator took over from the policy (/franka/hand_back returns control)")
        if ok:
            self._send(msg, topics.OPERATOR_ACTION, OPERATOR)
        else:
            self._publish_status()

    def operator_claims(self) -> None:
        """An operator in this process (the twin's scripted one) takes control as it decides to act on the current
        frame, before its command arrives on /teleop/action: no later policy command reaches the arm (takeover.py).
        Called from the operator's thread; publishes nothing (the command that follows publishes the status)."""
        if self.guard is None or self.guard.state not in ("active", "holding"):
            return
        if self.takeover.claim(self.get_clock().now().nanoseconds):
            self.get_logger().info("operator took over from the policy (/franka/hand_back returns control)")

    def _send(self, msg: JointState, topic: str, source: str) -> None:
        """Through the guard (the safety filter, for both sources) to the arm; publish what was sent, by whom."""
        try:
            action = messages.msg_to_action(msg)
        except ValueError as e:
            self.get_logger().error(f"{topic}: {e}", throttle_duration_sec=1.0)
            action = None  # refused: a hold is sent if the arm is moving
        cmd = self.guard.on_action(action, time.monotonic())
        if cmd is not None:
            applied = messages.action_to_msg(cmd.action, messages.stamp_to_ns(msg.header.stamp))
            applied.header.frame_id = source
            self.applied_pub.publish(applied)
            self._frame_answered = True
        self._publish_frame()
        self._publish_status()

    def twin_frame_seq(self, stamp_ns: int) -> int | None:
        """Twin: the sequence number of the frame published with this stamp, if it is the latest one; else None."""
        seq, stamp = self._frame_seq, self._frame_stamp
        return seq if self._twin is not None and stamp == stamp_ns and seq > 0 else None

    def _frame_ns(self) -> int:
        """Twin: the stamp of the current frame (a command answering an older one is stale); 0 for a real arm."""
        return self._frame_stamp if self._twin is not None else 0

    def _on_hand_back(self, request, response):
        ok = self.takeover.hand_back()
        if ok:
            self.get_logger().info("control handed back to the policy")
        self._publish_status()
        response.success = ok
        response.message = "the policy drives" if ok else "the policy was driving already"
        return response

    def _on_timer(self) -> None:
        if self.guard is None:
            return
        reading = self.guard.on_timer(time.monotonic())
        if self._twin is not None:
            self._publish_frame(again=not self._frame_answered)  # (a timeout hold steps the twin)
        elif reading is not None:
            self._publish_reading(reading, self.get_clock().now().nanoseconds)
        self._publish_status()

    def _publish_reading(self, reading, stamp_ns: int) -> None:
        self.joint_pub.publish(messages.joint_state_msg(reading.q, reading.fingers, stamp_ns))
        self.pose_pub.publish(messages.pose_msg(reading.xyz, reading.quat, stamp_ns))

    def _publish_frame(self, again: bool = False) -> None:
        """Twin: publish a new frame, or `again` the last one with its stamp (instruction, state, image: one stamp)."""
        twin = self._twin
        frame = twin.frame() if twin is not None else None
        if frame is None or frame.seq == 0 or (frame.seq == self._frame_seq and not again):
            return
        if frame.seq != self._frame_seq:
            self._frame_seq, self._frame_answered = frame.seq, False
            self._frame_stamp = self.get_clock().now().nanoseconds
        now = self._frame_stamp
        self.task_pub.publish(String(data=frame.instruction))
        self._publish_reading(frame.reading, now)
        self.image_pub.publish(messages.image_to_msg(frame.image, now, "camera"))

    def _on_estop(self, request, response):
        """Takes no lock (see arm_guard.py): answers, and the arm is halting, whatever the other callbacks do."""
        if self.guard is not None:
            self.guard.estop()
        self._publish_status()
        response.success, response.message = True, "arm stopped; call reset, then activate again"
        return response

    def _on_reset(self, request, response):
        """estopped/fault -> inactive; the lifecycle goes to inactive too, so that `activate` re-arms the arm."""
        ok = self.guard is not None and self.guard.reset()
        if ok and self.lifecycle_state == "active":
            self.trigger_deactivate()
        self._publish_status()
        response.success = bool(ok)
        response.message = (f"arm {self.guard.state if self.guard else 'unconfigured'}, lifecycle {self.lifecycle_state}"
                            + ("; activate to move again" if ok else ""))
        return response

    def _publish_status(self) -> None:
        g = self.guard
        fields = {"state": g.state if g else "unconfigured", "control": self.takeover.controller,
                  "takeover": self.takeover.stats.to_dict()}
        if g is not None:
            s = g.stats
            fields |= {"applied": s.applied, "rejected": s.rejected, "modified": s.modified, "ignored": s.ignored,
                       "timeouts": s.timeouts, "tracking_holds": s.tracking_holds, "hold_reason": g.hold_reason,
                       "errors": s.errors[-3:], "last_reasons": list(g.last_reasons)}
            fields |= g.backend.status()
            if g.state in ("active", "holding"):  # the commanded target (franky) or measured pose (twin) deltas move
                try:
                    fields["target"] = [round(float(v), 5) for v in g.backend.reference_xyz()]
                except Exception:  # noqa: BLE001 - a failing backend faults the guard on its next call, not here
                    pass
            if self.episode is not None:
                fields["episode"] = self.episode
        self.status.publish(**fields)


def main(args=None) -> None:
    run(FrankaNode, args)


if __name__ == "__main__":
    main()
