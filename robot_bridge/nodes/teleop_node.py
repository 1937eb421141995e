"""teleop node: keyboard (this terminal, or keys sent on /teleop/keys) or a SpaceMouse -> arm commands.

Publishes at the control rate (fps)  /teleop/twist (TwistStamped, m/s + rad/s), /teleop/gripper (Float64),
                                     /action (the 7-d step: twist / fps, gripper; what the franka node executes)
Subscribes /teleop/keys (std_msgs/String: key presses from another terminal or a UI)
Keys 1/2/3 call /recorder/start, /recorder/stop, /recorder/discard. Key map: robot_bridge/teleop_keys.py.
Intervene mode (`intervene: true`, the `intervene` profile: the policy drives): the step goes to /teleop/action, and
only on ticks with operator input (a motion key held, a gripper key, a SpaceMouse deflection or button), so the first
input takes control from the policy at once (robot_bridge/takeover.py); `h` calls /franka/hand_back. Until the
operator acts, the gripper follows the commands the arm was sent (/franka/applied_action), so a take-over keeps it.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from robot_bridge import messages, topics
from robot_bridge.nodes import run
from robot_bridge.params import TeleopParams, declare
from robot_bridge.teleop_keys import SERVICE_KEYS, KeyTeleop

NODE_NAME = "teleop"
KEYS_TOPIC = "/teleop/keys"
SPACEMOUSE_DEADZONE = 0.05
"""SpaceMouse axes below this (of full deflection) are no input."""


def read_terminal_keys(on_key, stop: threading.Event) -> None:
    """Feed single key presses from this terminal (raw mode) to `on_key` until `stop` is set."""
    import select
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        while not stop.is_set():
            if select.select([sys.stdin], [], [], 0.1)[0]:
                on_key(sys.stdin.read(1))
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


class TeleopNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare(self, TeleopParams)
        self.keys = KeyTeleop(self.p.linear_speed, self.p.angular_speed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._spacemouse = None
        self.twist_pub = self.create_publisher(TwistStamped, topics.TELEOP_TWIST, 10)
        self.gripper_pub = self.create_publisher(Float64, topics.TELEOP_GRIPPER, 10)
        self.action_pub = self.create_publisher(JointState, topics.ACTION, 10)
        self.operator_pub = self.create_publisher(JointState, topics.OPERATOR_ACTION, 10)
        self.trigger_clients = {srv: self.create_client(Trigger, srv) for srv in SERVICE_KEYS.values()}
        if self.p.intervene:
            self.create_subscription(JointState, topics.APPLIED_ACTION, self._on_applied, 10)
        self.create_subscription(String, KEYS_TOPIC, lambda m: [self._on_key(c) for c in m.data], 10)
        if self.p.input == "keyboard":
            if sys.stdin.isatty():
                threading.Thread(target=read_terminal_keys, args=(self._on_key, self._stop), daemon=True).start()
                self.get_logger().info("keyboard teleop: w/s a/d r/f move, u/o i/k j/l rotate, space gripper, 1 rec 2 save 3 discard")
            else:
                self.get_logger().warning(f"stdin is not a terminal: send keys on {KEYS_TOPIC}")
        elif self.p.input == "spacemouse":
            try:
                import pyspacemouse
            except ImportError:
                raise RuntimeError("teleop.input=spacemouse needs the pyspacemouse package") from None
            if not pyspacemouse.open():
                raise RuntimeError("teleop.input=spacemouse: no SpaceMouse found")
            self._spacemouse = pyspacemouse
        self.create_timer(1.0 / self.p.fps, self._on_timer)

    def _on_key(self, key: str) -> None:
        with self._lock:
            service = self.keys.on_key(key, time.monotonic())
        if service is not None:
            client = self.trigger_clients[service]
            if client.service_is_ready():
                client.call_async(Trigger.Request())
            else:
                self.get_logger().error(f"{service} is not available")

    def _on_applied(self, msg: JointState) -> None:
        """Intervene mode: while the policy drives, the gripper follows what the arm was sent."""
        if msg.header.frame_id == "policy" and msg.position:
            with self._lock:
                self.keys.follow_gripper(float(msg.position[-1]))

    def _on_timer(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        with self._lock:
            now = time.monotonic()
            if self._spacemouse is not None:
                s = self._spacemouse.read()  # axes in [-1, 1]; left button closes, right opens
                axes = np.array([s.y, -s.x, s.z, -s.roll, -s.pitch, -s.yaw])
                axes[np.abs(axes) < SPACEMOUSE_DEADZONE] = 0.0
                vel = axes * self.keys.speed
                if s.buttons and s.buttons[0]:
                    self.keys.gripper = -1.0
                elif len(s.buttons) > 1 and s.buttons[1]:
                    self.keys.gripper = 1.0
                has_input = bool(np.any(axes)) or any(s.buttons[:2])
            else:
                vel = self.keys.velocity(now)
                has_input = self.keys.has_input(now)
            gripper = self.keys.gripper
        twist = TwistStamped()
        twist.header.stamp = messages.ns_to_stamp(now_ns)
        twist.header.frame_id = "base"
        (twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z,
         twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z) = (float(v) for v in vel)
        self.twist_pub.publish(twist)
        self.gripper_pub.publish(Float64(data=float(gripper)))
        step = messages.action_to_msg(np.concatenate([vel / self.p.fps, [gripper]]), now_ns)
        if not self.p.intervene:
            self.action_pub.publish(step)
        elif has_input:
            self.operator_pub.publish(step)

    def destroy_node(self) -> None:
        self._stop.set()
        if self._spacemouse is not None:
            self._spacemouse.close()
        super().destroy_node()


def main(args=None) -> None:
    run(TeleopNode, args)


if __name__ == "__main__":
    main()
