"""Bridge test doubles: a scripted `Policy` with fault injection, its checkpoint loader, and `RosHarness` (a probe node
that plays camera and records topics). Processes and the ROS environment of a test: `doubles.sandbox`.

The scripted policy's "checkpoint" is a JSON file, read by `load_scripted_policy` (a PolicyNode built with
`load=load_scripted_policy` in a test; in a process of its own, `doubles.scripted_policy_node`):
    {"spec": {FeatureSpec fields}, "chunk_size": 4, "action": [7 floats] or [[7 floats], ...] (chunk k: the k-th, cycled),
     "fault": null | {"kind": "raise" | "nan" | "oversize", "after_calls": n}, "sleep_ms": 0}
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec
from cotrain.policies.base import Policy


class ScriptedPolicy(Policy):
    """Returns a constant chunk (or, given several actions, chunk k repeats action k, cycled); after `after_calls`
    calls to `sample`, injects the configured fault."""

    def __init__(self, spec: FeatureSpec, chunk_size: int, action, fault: dict | None = None, sleep_ms: float = 0.0):
        super().__init__()
        self.spec, self.chunk_size = spec, chunk_size
        a = torch.as_tensor(action, dtype=torch.float32)
        self.actions = a[None] if a.ndim == 1 else a
        if self.actions.ndim != 2 or self.actions.shape[1] != spec.action_dim or len(self.actions) == 0:
            raise ValueError(f"scripted policy action: expected {spec.action_dim} values or rows of them, got "
                             f"{tuple(a.shape)}")
        self.action = self.actions[0]
        self.fault = fault
        self.sleep_ms = sleep_ms
        self.calls = 0
        self.seen: list[dict] = []  # the observations it was given (for preprocessing tests)

    def sample(self, obs, explore):
        self.calls += 1
        self.seen.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in obs.items()})
        del self.seen[:-8]
        b = len(obs[TASK_KEY])
        assert obs[IMAGE_KEY].shape[1:] == self.spec.image_shape and obs[STATE_KEY].shape == (b, self.spec.state_dim)
        if self.sleep_ms:
            time.sleep(self.sleep_ms / 1000.0)
        chunk = self.actions[(self.calls - 1) % len(self.actions)].expand(b, self.chunk_size, -1).clone()
        if self.fault and self.calls > self.fault["after_calls"]:
            kind = self.fault["kind"]
            if kind == "raise":
                raise RuntimeError("injected policy failure")
            if kind == "nan":
                chunk[:, :, 0] = float("nan")
            elif kind == "oversize":
                chunk[:, :, 0:3] = 1.0  # 1 m per step
                chunk[:, :, 3:6] = 3.0
                chunk[:, :, 6] = 7.0
            else:
                raise ValueError(f"unknown fault kind {kind!r}")
        zeros = torch.zeros(b)
        return chunk, zeros, zeros, {}

    def evaluate(self, obs, aux):
        b = len(obs[TASK_KEY])
        return torch.zeros(b), torch.zeros(b), torch.zeros(b)

    def sft_loss(self, batch):
        return (batch[ACTION_KEY] - self.action).pow(2).mean()


def write_scripted_checkpoint(path: str | Path, spec: FeatureSpec, action, chunk_size: int = 4,
                              fault: dict | None = None, sleep_ms: float = 0.0) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"spec": spec.to_dict(), "chunk_size": chunk_size, "action": np.asarray(action, float).tolist(),
                                "fault": fault, "sleep_ms": sleep_ms}))
    return path


def load_scripted_policy(path: str | Path, expected_spec: FeatureSpec) -> ScriptedPolicy:
    """Same contract as cotrain.policies.checkpoint.load_policy: refuses a spec that differs from the robot's."""
    d = json.loads(Path(path).read_text())
    spec = FeatureSpec.from_dict(d["spec"])
    expected_spec.check_matches(spec, where=f"checkpoint {path}")
    return ScriptedPolicy(spec, d["chunk_size"], d["action"], d.get("fault"), d.get("sleep_ms", 0.0))


class Received(NamedTuple):
    """One recorded message."""

    t: float
    """time.monotonic() when this process handled it (late when this process is busy: prefer the stamps)."""
    value: Any
    stamp_ns: int
    """header.stamp (actions: the image they answer; poses: the reading's capture time)."""
    sent_ns: int
    """When the publishing node published it (DDS source timestamp, the host clock like the stamps)."""


class RosHarness:
    """One test's ROS world: a context, a multi-threaded executor spinning in a thread, and a probe node that can
    publish camera frames, record topics (with their stamps and publication times) and call services.
    Call `close()` (or use as a context manager)."""

    def __init__(self, image_shape: tuple[int, int, int] = (128, 128, 3), threads: int = 4) -> None:
        import threading

        import rclpy
        from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String

        from robot_bridge import messages, topics
        from robot_bridge.nodes import spin_bounded

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = (SingleThreadedExecutor(context=self.context) if threads == 1
                         else MultiThreadedExecutor(num_threads=threads, context=self.context))
        self.probe = Node("probe", context=self.context)
        self.image = np.random.default_rng(0).integers(0, 255, image_shape, dtype=np.uint8)
        self.image_pub = self.probe.create_publisher(Image, topics.IMAGE, 2)
        self.action_pub = self.probe.create_publisher(JointState, topics.ACTION, 10)
        self.camera_on = False
        self.frames_sent = 0
        self.last_frame_ns = 0
        self._camera_timer = None
        self.lock = threading.RLock()  # wait_for holds it around predicates, which may read under it again
        self.applied: list[Received] = []  # /franka/applied_action: what the arm was sent (after the filter)
        self.actions: list[Received] = []  # /action
        self.poses: list[Received] = []  # /franka/ee_pose: xyz (the last 2000)
        self.quats: list[Received] = []  # /franka/ee_pose: orientation [x, y, z, w] (the last 2000)
        self.status: dict[str, dict] = {}  # latest status of each node
        self.status_log: list[Received] = []  # every status: value (key, dict)
        self.nodes: list = []

        def record(into, value, msg, info, keep=None):
            with self.lock:
                into.append(Received(time.monotonic(), value, messages.stamp_to_ns(msg.header.stamp),
                                     int(info["source_timestamp"])))
                if keep:
                    del into[:-keep]

        def status_cb(key):
            def cb(msg, info):
                value = json.loads(msg.data)
                with self.lock:
                    self.status[key] = value
                    self.status_log.append(Received(time.monotonic(), (key, value), 0, int(info["source_timestamp"])))
            return cb

        self.probe.create_subscription(JointState, topics.APPLIED_ACTION,
                                       lambda m, i: record(self.applied, messages.msg_to_action(m), m, i), 50)
        self.probe.create_subscription(JointState, topics.ACTION,
                                       lambda m, i: record(self.actions, np.asarray(m.position), m, i), 50)
        def pose_cb(m, i):
            o = m.pose.orientation
            record(self.poses, np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z]), m, i, keep=2000)
            record(self.quats, np.array([o.x, o.y, o.z, o.w]), m, i, keep=2000)

        self.probe.create_subscription(messages.PoseStamped, topics.EE_POSE, pose_cb, 50)
        for key, topic in (("franka", topics.FRANKA_STATUS), ("policy", topics.POLICY_STATUS), ("recorder", topics.RECORDER_STATUS)):
            self.probe.create_subscription(String, topic, status_cb(key), messages.STATUS_QOS)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=spin_bounded, args=(self.executor,), daemon=True)
        self.thread.start()

    def now_ns(self) -> int:
        """The host clock the stamps are on."""
        return self.probe.get_clock().now().nanoseconds

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def start_camera(self, rate_hz: float = 30.0) -> None:
        from robot_bridge import messages

        def tick():
            if self.camera_on:
                stamp = self.now_ns()
                self.image_pub.publish(messages.image_to_msg(self.image, stamp, "camera"))
                self.frames_sent += 1
                self.last_frame_ns = stamp

        self.camera_on = True
        if self._camera_timer is None:
            self._camera_timer = self.probe.create_timer(1.0 / rate_hz, tick)

    def stop_camera(self) -> None:
        self.camera_on = False

    def call(self, service: str, timeout: float = 20.0):
        from robot_bridge.deploy import call_trigger

        return call_trigger(self.probe, service, timeout)

    def wait_for(self, predicate, timeout: float, what) -> None:
        """`what`: a description, or a callable giving one when the wait times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.02)
        what = what() if callable(what) else what
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}; status {self.status}")

    def change_state(self, node: str, transition: str, timeout: float = 20.0) -> bool:
        """Drive a lifecycle node ('configure', 'activate', ...) through its ~/change_state service."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        client = self.probe.create_client(ChangeState, f"/{node}/change_state")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service /{node}/change_state not available in {timeout} s")
            request = ChangeState.Request()
            request.transition.id = getattr(Transition, f"TRANSITION_{transition.upper()}")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"/{node}/change_state {transition} did not answer in {timeout} s")
                time.sleep(0.01)
            return bool(future.result().success)
        finally:
            self.probe.destroy_client(client)

    def poses_between(self, t0_ns: int, t1_ns: int) -> list[np.ndarray]:
        """End-effector positions whose reading was stamped in [t0_ns, t1_ns]."""
        with self.lock:
            return [r.value for r in self.poses if t0_ns <= r.stamp_ns <= t1_ns]

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=5.0)
        for node in self.nodes + [self.probe]:  # destroying the franka node stops and disconnects the arm
            try:
                node.destroy_node()
            except Exception as e:  # noqa: BLE001 - keep closing the others
                print(f"RosHarness.close: destroying {node.get_name()} failed: {e}")
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=2.0)

    def __enter__(self) -> "RosHarness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def json_safe(x):
    """Tuples (and nested ones) as lists: a dataclass's asdict written as YAML by `yaml.safe_dump`."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x
