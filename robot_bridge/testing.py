"""Test helpers: a scripted `Policy` with fault injection, its checkpoint loader, an embedded franky-sim, and
isolated ROS environment variables (loopback discovery, a random domain).

The scripted policy's "checkpoint" is a JSON file, so a policy node in another process can load it through the
`policy_loader` parameter (`robot_bridge.testing:load_scripted_policy`):
    {"spec": {FeatureSpec fields}, "chunk_size": 4, "action": [7 floats],
     "fault": null | {"kind": "raise" | "nan" | "oversize", "after_calls": n}, "sleep_ms": 0}
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from cotrain.data.spec import ACTION_KEY, IMAGE_KEY, STATE_KEY, TASK_KEY, FeatureSpec
from cotrain.policies.base import Policy


class ScriptedPolicy(Policy):
    """Returns a constant chunk; after `after_calls` calls to `sample`, injects the configured fault."""

    def __init__(self, spec: FeatureSpec, chunk_size: int, action, fault: dict | None = None, sleep_ms: float = 0.0):
        super().__init__()
        self.spec, self.chunk_size = spec, chunk_size
        self.action = torch.as_tensor(action, dtype=torch.float32)
        if self.action.shape != (spec.action_dim,):
            raise ValueError(f"scripted policy action: expected {spec.action_dim} values, got {tuple(self.action.shape)}")
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
        chunk = self.action.expand(b, self.chunk_size, -1).clone()
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
    path.write_text(json.dumps({"spec": spec.to_dict(), "chunk_size": chunk_size, "action": list(map(float, action)),
                                "fault": fault, "sleep_ms": sleep_ms}))
    return path


def load_scripted_policy(path: str | Path, expected_spec: FeatureSpec) -> ScriptedPolicy:
    """Same contract as cotrain.policies.checkpoint.load_policy: refuses a spec that differs from the robot's."""
    d = json.loads(Path(path).read_text())
    spec = FeatureSpec.from_dict(d["spec"])
    expected_spec.check_matches(spec, where=f"checkpoint {path}")
    return ScriptedPolicy(spec, d["chunk_size"], d["action"], d.get("fault"), d.get("sleep_ms", 0.0))


def isolated_ros_env(base: dict | None = None) -> dict:
    """Environment for ROS processes of one test: discovery on localhost only, a random domain id."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    env.pop("ROS_STATIC_PEERS", None)
    return env


@contextmanager
def franky_sim_process(hostname: str, timeout: float = 60.0):
    """franky-sim (MuJoCo FR3 + hand) in its own process serving FCI on `hostname` (a 127.x.y.z address).

    Its own process keeps the 1 kHz simulation loop off this process's GIL (embedded, it fell behind real time
    while nodes ran beside it and libfranka reported network errors). Stopped with SIGKILL by its pid.
    """
    import subprocess
    import sys
    import tempfile

    if not hostname.startswith("127."):
        raise ValueError(f"franky_sim_process: {hostname} is not a loopback address")
    log = tempfile.NamedTemporaryFile("w+", prefix="franky_sim_", suffix=".log")  # a pipe left unread would fill up
    proc = subprocess.Popen(                                                       # and block the simulator
        [sys.executable, "-u", "-m", "franky_sim.run_server", "--simulator", "mujoco", "--hostname", hostname],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while "Connect to the server" not in Path(log.name).read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"franky-sim exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"franky-sim did not come up on {hostname} in {timeout} s")
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()
        log.close()


@contextmanager
def franky_sim(hostname: str):
    """An embedded franky-sim (MuJoCo FR3 + hand) serving FCI on `hostname` (a 127.0.0.x address)."""
    if not hostname.startswith("127."):
        raise ValueError(f"franky_sim: {hostname} is not a loopback address")
    import franky_sim as fs
    from franky_sim.mujoco_simulator import MujocoSimulator

    sim = MujocoSimulator()
    sim.init()
    sim_robot = sim.add_robot()
    server = fs.SimulationServer(sim, hostname_candidates=[hostname])
    server.init()
    server.run_async()
    try:
        yield sim_robot
    finally:
        server.cleanup()
        sim.cleanup()


class RosHarness:
    """One test's ROS world: a context, a multi-threaded executor spinning in a thread, and a probe node that can
    publish camera frames, record topics and call Trigger services. Call `close()` (or use as a context manager)."""

    def __init__(self, image_shape: tuple[int, int, int] = (128, 128, 3), threads: int = 4) -> None:
        import threading

        import rclpy
        from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String

        from robot_bridge import messages, topics

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
        self._camera_timer = None
        self.lock = threading.Lock()
        self.applied: list[tuple[float, np.ndarray]] = []
        self.actions: list[tuple[float, np.ndarray, int]] = []
        self.poses: list[tuple[float, np.ndarray]] = []
        self.status: dict[str, dict] = {}
        self.nodes: list = []

        def on_applied(msg):
            with self.lock:
                self.applied.append((time.monotonic(), messages.msg_to_action(msg)))

        def on_action(msg):
            with self.lock:
                self.actions.append((time.monotonic(), np.asarray(msg.position), messages.stamp_to_ns(msg.header.stamp)))

        def on_pose(msg):
            p = msg.pose.position
            with self.lock:
                self.poses.append((time.monotonic(), np.array([p.x, p.y, p.z])))
                del self.poses[:-500]

        def status_cb(key):
            def cb(msg):
                with self.lock:
                    self.status[key] = json.loads(msg.data)
            return cb

        self.probe.create_subscription(JointState, topics.APPLIED_ACTION, on_applied, 50)
        self.probe.create_subscription(JointState, topics.ACTION, on_action, 50)
        self.probe.create_subscription(messages.PoseStamped, topics.EE_POSE, on_pose, 50)
        for key, topic in (("franka", topics.FRANKA_STATUS), ("policy", topics.POLICY_STATUS), ("recorder", topics.RECORDER_STATUS)):
            self.probe.create_subscription(String, topic, status_cb(key), messages.STATUS_QOS)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def start_camera(self, rate_hz: float = 30.0) -> None:
        from robot_bridge import messages

        def tick():
            if self.camera_on:
                self.image_pub.publish(messages.image_to_msg(self.image, self.probe.get_clock().now().nanoseconds, "camera"))
                self.frames_sent += 1

        self.camera_on = True
        if self._camera_timer is None:
            self._camera_timer = self.probe.create_timer(1.0 / rate_hz, tick)

    def stop_camera(self) -> None:
        self.camera_on = False

    def call(self, service: str, timeout: float = 20.0):
        from robot_bridge.deploy import call_trigger

        return call_trigger(self.probe, service, timeout)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.02)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}; status {self.status}")

    def displacement_since(self, t0: float) -> float:
        """Largest distance of the end effector from its first position at or after monotonic time t0."""
        with self.lock:
            xs = [x for t, x in self.poses if t >= t0]
        if len(xs) < 2:
            raise AssertionError(f"no end-effector poses received since t0 ({len(xs)})")
        return float(max(np.linalg.norm(x - xs[0]) for x in xs))

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
