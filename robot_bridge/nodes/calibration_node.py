"""calibration node: plays the scripted calibration motion (robot_bridge/calibration_capture.py) on /action.

Publishes   /action (one step per tick at fps, stamped now; then nothing: the arm holds), /calibration/status (JSON)
Services    /calibration/start, /calibration/stop (std_srvs/Trigger)
`python -m robot_bridge.deploy profile=calibrate ... episodes=1 episode_s=6` records the motion as one episode
(provenance source 'expert') into `dataset`: what `python -m cotrain.calibrate dataset=...` reads for the latency.
Every step goes through the franka node's safety filter like any command.
"""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robot_bridge import messages, topics
from robot_bridge.calibration_capture import calibration_motion
from robot_bridge.nodes import run
from robot_bridge.params import CalibrationParams, declare

NODE_NAME = "calibration"


class CalibrationNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare(self, CalibrationParams)
        self.motion = calibration_motion(self.p.steps, self.p.amplitude, self.p.seed)  # a bad value fails at start
        self.step = len(self.motion)  # not playing
        self.action_pub = self.create_publisher(JointState, topics.ACTION, 10)
        self.status = messages.StatusPublisher(self.create_publisher(String, "/calibration/status", messages.STATUS_QOS))
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_timer(1.0 / self.p.fps, self._on_timer)
        self._publish_status()

    def _on_start(self, request, response):
        self.step = 0
        response.success, response.message = True, f"playing {len(self.motion)} steps"
        self._publish_status()
        return response

    def _on_stop(self, request, response):
        self.step = len(self.motion)
        response.success, response.message = True, "stopped"
        self._publish_status()
        return response

    def _on_timer(self) -> None:
        if self.step >= len(self.motion):
            return
        self.action_pub.publish(messages.action_to_msg(self.motion[self.step], self.get_clock().now().nanoseconds))
        self.step += 1
        self._publish_status()

    def _publish_status(self) -> None:
        playing = self.step < len(self.motion)
        self.status.publish(state="playing" if playing else "idle", step=min(self.step, len(self.motion)),
                            steps=len(self.motion))


def main(args=None) -> None:
    run(CalibrationNode, args)


if __name__ == "__main__":
    main()
