"""operator node (twin backend only, in the franka node's process): a scripted operator plays the human of HG-DAgger.

Subscribes  /camera/image_raw (the twin's frames)
Publishes   /teleop/action (the expert's step, stamped with the frame it answers: takes control from the policy)
Calls       /franka/hand_back
For each new frame it looks at the simulated scene (`TwinBackend.inspect`: only while nothing has stepped the env
since the frame) and lets `scripted_operator.DriftOperator` decide: watch, act or hand back. Deciding to act, it claims
control at once (`FrankaNode.operator_claims`, still under the env's lock), as a person grabbing the controls would: its
command may reach the arm after the policy's command for the next frame (two topics keep no order between them).
`sent` and `handbacks` list what it did (episode, step), for tests and the round's summary.
"""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from robot_bridge import messages, topics
from robot_bridge.scripted_operator import ACT, HAND_BACK, DriftCriterion, DriftOperator

NODE_NAME = "operator"


class OperatorNode(Node):
    def __init__(self, franka, criterion: DriftCriterion, **kwargs) -> None:
        from cotrain.envs import load_task_config
        from cotrain.envs.experts import PLANS, WaypointExpert
        from robot_bridge.backends import backend_kind

        super().__init__(NODE_NAME, **kwargs)
        if not backend_kind(franka.p.backend).simulated_scene:
            raise ValueError(f"the scripted operator needs a simulated scene to look at; franka.backend="
                             f"{franka.p.backend!r} is not one")
        self.franka = franka
        task = load_task_config(franka.p.twin_env).task
        self.operator = DriftOperator(WaypointExpert(PLANS[task]), criterion)
        self.pub = self.create_publisher(JointState, topics.OPERATOR_ACTION, 10)
        self.hand_back = self.create_client(Trigger, "/franka/hand_back")
        self.sent: list[tuple[int, int, list[float]]] = []
        """(episode, step, action) of every command published."""
        self.handbacks: list[tuple[int, int]] = []
        """(episode, step) of every hand-back: the policy answers that step's frame."""
        self._episode = -1
        self._last_stamp = 0
        self.create_subscription(Image, topics.IMAGE, self._on_frame, 10)

    def _on_frame(self, msg: Image) -> None:
        stamp = messages.stamp_to_ns(msg.header.stamp)
        seq = self.franka.twin_frame_seq(stamp)
        if stamp == self._last_stamp or seq is None or self.franka.guard is None:
            return  # a frame published again, or one the env has moved past
        self._last_stamp = stamp
        seen = self.franka.guard.backend.inspect(self._decide, seq)
        if seen is None:
            return
        (index, step), decision = seen
        if decision.kind == ACT:
            self.pub.publish(messages.action_to_msg(decision.action, stamp))
            self.sent.append((index, step, [float(v) for v in decision.action]))
        elif decision.kind == HAND_BACK:
            self.hand_back.call_async(Trigger.Request())
            self.handbacks.append((index, step))

    def _decide(self, env, episode):
        if episode.index != self._episode:
            self._episode = episode.index
            self.operator.reset(env, episode.seed)
        decision = self.operator.decide(env)
        if decision.kind == ACT:  # under the env's lock: nothing steps past this frame before the claim
            self.franka.operator_claims()
        return (episode.index, episode.steps), decision
