"""policy node: runs a cotrain checkpoint on the camera and arm state at the control rate (see policy_loop.py).

Subscribes  /camera/image_raw, /franka/joint_states + /franka/ee_pose, /task
Publishes   /action (JointState named vector, stamped with the image it answers), /policy/status (JSON)
Services    /policy/start, /policy/stop, /policy/reload (std_srvs/Trigger; reload re-reads the `checkpoint`
            parameter and keeps the running policy if the new one fails to load or its spec differs)
With `pace=frames` (the twin backend) each new frame takes exactly one tick once the state stamped with it has
arrived, so the policy answers the env's observations exactly as cotrain.eval does.
With `prefetch_ticks` L > 0 (pace=clock only) the policy runs in a worker thread (`inference.ThreadedInference`): the
next chunk is computed from the observation of the tick that leaves fewer than L actions queued, and a control tick
only pops an action (see policy_loop.py). The executor thread and the worker share the GIL; torch releases it inside
its ops, and `torch_threads` should leave a core to the executor (1 on a 2-core machine).
While an operator drives (`/franka/status` control = operator, robot_bridge/takeover.py) the loop is stopped (no
inference, nothing published); when control comes back it starts afresh (a new chunk from the newest observation),
unless /policy/stop was called meanwhile.
The checkpoint (a checkpoint directory, or a training run: its latest, `cotrain.checkpoints`) must match the robot
config's feature spec; the policy does its
own preprocessing (normalisation, its own resize), the node only brings images to the spec's size, exactly as the
camera node and the recorder do.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from typing import Any, Callable

import numpy as np
import rclpy
import torch
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from cotrain.data.spec import IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec
from robot_bridge import messages, topics
from robot_bridge.nodes import run
from robot_bridge.image import to_spec_image
from robot_bridge.params import PolicyParams, declare
from robot_bridge.inference import SyncInference, ThreadedInference
from robot_bridge.policy_loop import LoopTiming, PolicyLoop, Tick

NODE_NAME = "policy"
GIL_SWITCH_S = 0.001
MIN_TIMER_S = 0.005
ARM_STOPPED = ("estopped", "fault")
OPERATOR_DRIVES = "operator"
"""stop_reason while an operator has taken over (the loop restarts when control comes back)."""


def load_checkpoint(path: str, spec: FeatureSpec):
    """The policy of the checkpoint `path` means (`cotrain.checkpoints.resolve`: a checkpoint directory, a run's `ckpt`
    directory or the run), refused when its feature spec differs from `spec`; training code is imported only here."""
    from cotrain.checkpoints import resolve
    from cotrain.policies.checkpoint import load_policy

    return load_policy(resolve(path), expected_spec=spec)


def make_act_fn(policy, device: str):
    """(image, state, task) -> chunk [H, 7]: the raw observation of cotrain.policies.base, batch of one."""

    @torch.no_grad()
    def act(image: np.ndarray, state: np.ndarray, task: str) -> np.ndarray:
        obs = {IMAGE_KEY: image[None], STATE_KEY: state[None].astype(np.float32), TASK_KEY: [task]}
        actions, _, _, _ = policy.sample(obs, explore=False)
        return actions[0].detach().to("cpu", torch.float64).numpy()

    return act


class PolicyNode(Node):
    def __init__(self, load: Callable[[str, FeatureSpec], Any] = load_checkpoint, **kwargs) -> None:
        """`load(path, spec) -> Policy` reads the `checkpoint` parameter's policy (tests pass a scripted one)."""
        super().__init__(NODE_NAME, **kwargs)
        self.load = load
        self.p = declare(self, PolicyParams)
        self.spec = self.p.feature_spec()
        self.task = self.p.task
        if self.p.torch_threads > 0:
            torch.set_num_threads(self.p.torch_threads)
        self.frame_paced = self.p.pace == "frames"
        if self.frame_paced and self.p.prefetch_ticks:
            raise ValueError(f"policy.prefetch_ticks={self.p.prefetch_ticks} needs pace=clock: with pace=frames the env "
                             "waits for each command, so there is nothing to compute ahead")
        # frames: period 0 and infinite tolerance make every frame take a tick and the timer none
        period, tolerance = (0.0, math.inf) if self.frame_paced else (1.0 / self.spec.fps, self.p.tick_tolerance_ms / 1000.0)
        watchdog = 0.0 if self.frame_paced else max(tolerance, MIN_TIMER_S)  # the timer's period (the watchdog's margin)
        self.loop = PolicyLoop(LoopTiming(period=period, tolerance=tolerance, stale=self.p.stale_obs_ms / 1000.0,
                                          margin=watchdog), self.p.n_action_steps, self.p.prefetch_ticks)
        self.stop_reason = ""  # why the loop stopped on its own (the arm e-stopped or faulted)
        self._pending: tuple[np.ndarray, int] | None = None  # frames: the frame no tick has taken yet
        self._state_ns = 0
        self._ticked_ns = 0  # frames: stamp of the last frame that took a tick (a frame published again is skipped)
        self._lock = threading.Lock()  # the loop is driven from the image callback and the timer
        self._logged_stale = False
        self.policy = None
        self.act = None
        self.infer: SyncInference | ThreadedInference | None = None
        if self.p.checkpoint:
            self._load(self.p.checkpoint)  # a mismatching spec raises here: the node refuses to start
        self._pose: PoseStamped | None = None
        self._joints: JointState | None = None
        self.action_pub = self.create_publisher(JointState, topics.ACTION, 10)
        self.status = messages.StatusPublisher(self.create_publisher(String, topics.POLICY_STATUS, messages.STATUS_QOS))
        self.create_subscription(Image, topics.IMAGE, self._on_image, 2)
        self.create_subscription(PoseStamped, topics.EE_POSE, self._on_pose, 10)
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_joints, 10)
        self.create_subscription(String, topics.TASK, self._on_task, 10)
        self.create_subscription(String, topics.FRANKA_STATUS, self._on_arm_status, messages.STATUS_QOS)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/reload", self._on_reload)
        if not self.frame_paced:
            self.create_timer(watchdog, self._on_timer)  # late ticks within 2 x tolerance; the stale watchdog
        if self.p.autostart:
            self._start()
        self._publish_status()

    # ---- checkpoint ---------------------------------------------------------------------------------
    def _load(self, path: str) -> None:
        policy = self.load(path, self.spec)
        steps = self.p.n_action_steps or policy.chunk_size
        if self.p.n_action_steps > policy.chunk_size or self.p.prefetch_ticks > steps:
            raise ValueError(f"checkpoint {path}: chunk {policy.chunk_size} is shorter than n_action_steps="
                             f"{self.p.n_action_steps} or than prefetch_ticks={self.p.prefetch_ticks}")
        policy.eval()
        if self.p.device != "cpu":
            policy.to(self.p.device)
        act = make_act_fn(policy, self.p.device)
        if self.infer is not None:
            self.infer.close()
        self.policy, self.act = policy, act
        if self.p.prefetch_ticks:
            # the executor thread waits for the GIL at most this long while the worker runs Python (default 5 ms)
            sys.setswitchinterval(GIL_SWITCH_S)
            self.infer = ThreadedInference(act)
        else:
            self.infer = SyncInference(act)
        self.get_logger().info(f"loaded {path} (chunk {policy.chunk_size}, prefetch {self.p.prefetch_ticks} ticks)")

    def destroy_node(self) -> None:
        if self.infer is not None:
            self.infer.close()
        super().destroy_node()

    def _start(self) -> tuple[bool, str]:
        if self.act is None:
            return False, "no checkpoint loaded"
        if not self.task:
            return False, "no task instruction (parameter 'task' or topic /task)"
        self.stop_reason = ""
        with self._lock:
            self.loop.start(self._now())
            tick = self._frame_tick()
        self._emit(tick)
        return True, "running"

    # ---- callbacks ----------------------------------------------------------------------------------
    def _now(self) -> float:
        """Seconds on the stamps' clock (ROS time), so that observation ages come from their stamps."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, msg: Image) -> None:
        now = self._now()
        try:
            image = to_spec_image(messages.msg_to_image(msg, copy=False), self.spec.image_height, self.spec.image_width)
        except ValueError as e:
            self.get_logger().error(f"{topics.IMAGE}: {e}", throttle_duration_sec=1.0)
            return
        with self._lock:
            if self.frame_paced:
                stamp = messages.stamp_to_ns(msg.header.stamp)
                if stamp > self._ticked_ns:
                    self._pending = (image, stamp)
                tick = self._frame_tick()
            else:
                tick = self.loop.on_frame(image, messages.stamp_to_ns(msg.header.stamp), now, self.infer, self.task)
        self._emit(tick)

    def _frame_tick(self) -> Tick | None:
        """pace=frames (under the lock): the pending frame's tick, once running and its state has arrived."""
        if self._pending is None or not self.loop.running or self._state_ns < self._pending[1]:
            return None
        (image, stamp), self._pending = self._pending, None
        self._ticked_ns = stamp
        return self.loop.on_frame(image, stamp, self._now(), self.infer, self.task)

    def _on_timer(self) -> None:
        with self._lock:
            tick = self.loop.on_timer(self._now(), self.infer, self.task)
        self._emit(tick)

    def _on_pose(self, msg: PoseStamped) -> None:
        self._pose = msg
        self._update_state()

    def _on_joints(self, msg: JointState) -> None:
        self._joints = msg
        self._update_state()

    def _update_state(self) -> None:
        if self._pose is None or self._joints is None:
            return
        try:
            state = messages.state_vector(self._pose, self._joints)
        except ValueError as e:
            self.get_logger().error(f"robot state: {e}", throttle_duration_sec=1.0)
            return
        stamp = min(messages.stamp_to_ns(self._pose.header.stamp), messages.stamp_to_ns(self._joints.header.stamp))
        with self._lock:
            self.loop.on_state(state, stamp * 1e-9)
            self._state_ns = stamp
            tick = self._frame_tick() if self.frame_paced else None
        self._emit(tick)

    def _on_task(self, msg: String) -> None:
        self.task = msg.data

    def _on_arm_status(self, msg: String) -> None:
        """The arm e-stopped or faulted: the policy stops too (start it again once the arm is re-armed). An operator
        took over: the policy pauses, and resumes with a fresh chunk when control comes back."""
        try:
            status = json.loads(msg.data)
            arm, control = status.get("state", ""), status.get("control", "policy")
        except (ValueError, AttributeError):
            return
        if control == "operator" and arm not in ARM_STOPPED:
            with self._lock:
                if not self.loop.running:
                    return
                self.loop.stop()
            self.stop_reason = OPERATOR_DRIVES
            self._publish_status()
            return
        if control == "policy" and self.stop_reason == OPERATOR_DRIVES and arm not in ARM_STOPPED:
            ok, why = self._start()
            if not ok:
                self.get_logger().error(f"control handed back, but the policy cannot start: {why}")
            self._publish_status()
            return
        if arm not in ARM_STOPPED:
            return
        with self._lock:
            if not self.loop.running:
                return
            self.loop.stop()
        self.stop_reason = f"arm {arm}"
        self.get_logger().warning(f"arm {arm}: policy stopped; call /policy/start once the arm is active again")
        self._publish_status()

    def _emit(self, tick: Tick | None) -> None:
        if tick is None:
            return
        if tick.kind == "fault":
            self.get_logger().error(f"policy failed, stopping: {tick.error}")
        self._log_stale(tick)
        self.action_pub.publish(messages.action_to_msg(tick.action, tick.stamp_ns))
        self._publish_status()

    def _on_start(self, request, response):
        response.success, response.message = self._start()
        self._publish_status()
        return response

    def _on_stop(self, request, response):
        self.stop_reason = ""  # stopped on request: a hand-back does not restart it
        with self._lock:
            self.loop.stop()
        response.success, response.message = True, "stopped"
        self._publish_status()
        return response

    def _on_reload(self, request, response):
        path = self.get_parameter("checkpoint").value
        try:
            with self._lock:
                self._load(path)
                self.loop.stop()  # a new policy starts from a fresh chunk, on request
            response.success, response.message = True, f"loaded {path}; call start"
        except Exception as e:  # noqa: BLE001 - keep the running policy
            response.success, response.message = False, f"reload of {path} refused: {e}"
            self.get_logger().error(response.message)
        self._publish_status()
        return response

    def _log_stale(self, tick: Tick) -> None:
        """One log line when the loop starts holding on stale observations, one when it acts again."""
        stale = self.loop.state == "stale"
        if stale == self._logged_stale:
            return
        self._logged_stale = stale
        if stale:
            age = (self._now() - self.loop.image_stamp_ns * 1e-9) * 1000.0
            self.get_logger().warning(f"observation stale (image {age:.0f} ms old, stale_obs_ms {self.p.stale_obs_ms:.0f}):"
                                      " holding the arm until fresh frames arrive")
        else:
            self.get_logger().info("observations fresh again: acting")

    def _publish_status(self) -> None:
        s = self.loop.stats
        self.status.publish(state=self.loop.state, acts=s.acts, holds=s.holds, waits=s.waits, late=s.late,
                            inferences=s.inferences, chunk_age_ms=round(s.chunk_age_ms, 1),
                            faults=s.faults[-3:], loaded=self.act is not None, stop_reason=self.stop_reason)


def main(args=None) -> None:
    run(PolicyNode, args)


if __name__ == "__main__":
    main()
