"""franka node (franky backend) + policy node against an embedded franky-sim, all on loopback.

Each test: a MuJoCo FR3 served on its own 127.x.y.z address, the nodes in this process on a random ROS domain with
localhost-only discovery, a probe publishing camera frames at 30 Hz. Fault injection: frames stop, NaN action,
oversize action, policy raises, policy node killed, e-stop; each must end with the arm held or stopped and every
command sent within the safety limits.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("franky_sim")

from cotrain.data.spec import FeatureSpec  # noqa: E402
from robot_bridge.graph import ros_parameters  # noqa: E402
from robot_bridge.safety import SafetyLimits, within_limits  # noqa: E402
from robot_bridge.testing import RosHarness, franky_sim_process, isolated_ros_env, write_scripted_checkpoint  # noqa: E402

# One rerun: every node shares this Python process with the harness and a MuJoCo server, and on 2 busy cores their
# timers sometimes run late enough that the arm moves too slowly for a wait; a real fault fails both runs.
pytestmark = [pytest.mark.ros, pytest.mark.franky_sim, pytest.mark.timeout(120), pytest.mark.flaky(reruns=1)]

# a box around franky-sim's home pose (0.554, 0, 0.521)
LIMITS = SafetyLimits(workspace_min=(0.35, -0.2, 0.2), workspace_max=(0.65, 0.2, 0.6), max_translation=0.01, max_rotation=0.05)
SPEC = FeatureSpec()
STEP_X = [0.005, 0, 0, 0, 0, 0, 1.0]
STILL_MM = 2.0  # an arm "at rest": moves less than this over the observation window
WAIT_S = 20.0
"""Upper bound for each awaited event. Generous: all nodes share one Python process with the harness, and on a loaded
2-core CI machine their timers run late; the assertions are about what happens, timing targets live in benchmarks/."""


@pytest.fixture
def ros_env(monkeypatch):
    env = isolated_ros_env()
    for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID"):
        monkeypatch.setenv(k, env[k])
    return env


@pytest.fixture
def sim_ip():
    ip = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
    with franky_sim_process(ip):
        yield ip


@pytest.fixture
def world(ros_env, sim_ip):
    h = RosHarness()
    yield h
    h.close()


def franka_params(ip: str, **kw) -> dict:
    p = dict(robot_ip=ip, state_rate_hz=30.0, command_timeout_ms=300.0, workspace_min=list(LIMITS.workspace_min),
             workspace_max=list(LIMITS.workspace_max), max_translation=LIMITS.max_translation,
             max_rotation=LIMITS.max_rotation)
    return p | kw


def policy_params(ckpt, **kw) -> dict:
    return dict(checkpoint=str(ckpt), policy_loader="robot_bridge.testing:load_scripted_policy", task="push the cube",
                stale_obs_ms=200.0) | kw


def make_franka(h: RosHarness, ip: str, activate: bool = True):
    from robot_bridge.nodes.franka_node import FrankaNode

    node = h.add(FrankaNode(context=h.context, parameter_overrides=ros_parameters(franka_params(ip))))
    assert node.trigger_configure().name == "SUCCESS"
    if activate:
        assert node.trigger_activate().name == "SUCCESS"
    return node


def make_policy(h: RosHarness, ckpt):
    from robot_bridge.nodes.policy_node import PolicyNode

    return h.add(PolicyNode(context=h.context, parameter_overrides=ros_parameters(policy_params(ckpt))))


def assert_all_sent_within_limits(h: RosHarness) -> None:
    with h.lock:
        sent = [a for _, a in h.applied]
        poses = [x for _, x in h.poses]
    assert sent, "no command was sent"
    # step sizes, gripper range and finiteness, independent of the pose (the workspace is checked on the poses)
    for a in sent:
        assert within_limits(np.array([0.5, 0.0, 0.4]), a, LIMITS), a
    lo, hi = np.array(LIMITS.workspace_min) - 0.01, np.array(LIMITS.workspace_max) + 0.01  # + tracking error
    for x in poses:
        assert np.all(x >= lo) and np.all(x <= hi), x


def assert_at_rest(h: RosHarness, window: float = 0.4, settle: float = 0.5) -> None:
    time.sleep(settle)  # a hold stops the arm where it was measured: it overshoots by a few mm, then stays
    t0 = time.monotonic()
    time.sleep(window)
    h.wait_for(lambda: sum(t >= t0 for t, _ in h.poses) >= 5, WAIT_S, "arm state")  # at least 5 samples, even when slow
    d = h.displacement_since(t0)
    assert d * 1000 < STILL_MM, f"arm moved {d * 1000:.1f} mm in {window} s while it should be held"


def wait_moved_x(h: RosHarness, x0: np.ndarray, dx: float, timeout: float = WAIT_S) -> None:
    h.wait_for(lambda: h.poses[-1][1][0] - x0[0] > dx, timeout, f"the arm to move {dx * 1000:.0f} mm in x")


def start_policy(h: RosHarness) -> None:
    r = h.call("/policy/start")
    assert r.success, r.message


def test_sends_nothing_before_activate_then_moves_on_command(world, sim_ip, tmp_path):
    h = world
    ckpt = write_scripted_checkpoint(tmp_path / "p.json", SPEC, STEP_X)
    franka = make_franka(h, sim_ip, activate=False)
    make_policy(h, ckpt)
    h.start_camera()
    h.wait_for(lambda: len(h.poses) > 3, WAIT_S, "arm state")
    start_policy(h)
    t0 = time.monotonic()
    h.wait_for(lambda: h.status.get("franka", {}).get("ignored", 0) >= 3, WAIT_S, "ignored commands")
    assert not h.applied and h.displacement_since(t0) < 0.001  # inactive: commands ignored, nothing moved
    x0 = h.poses[-1][1]
    assert franka.trigger_activate().name == "SUCCESS"
    wait_moved_x(h, x0, 0.03)  # 5 mm per tick at 10 Hz
    dx = h.poses[-1][1] - x0
    assert abs(dx[1]) < 0.01 and abs(dx[2]) < 0.01, dx
    assert_all_sent_within_limits(h)


def test_frames_stop_holds(world, sim_ip, tmp_path):
    h = world
    make_franka(h, sim_ip)
    make_policy(h, write_scripted_checkpoint(tmp_path / "p.json", SPEC, STEP_X))
    h.start_camera()
    h.wait_for(lambda: len(h.poses) > 3, WAIT_S, "arm state")
    start_policy(h)
    h.wait_for(lambda: len(h.applied) >= 5, WAIT_S, "commands")
    h.stop_camera()
    t_stop = time.monotonic()
    h.wait_for(lambda: sum(t > t_stop + 1.0 for t, _ in h.applied) >= 3, WAIT_S, "commands after the frames stopped")
    with h.lock:
        late = [a for t, a in h.applied if t > t_stop + 1.0]  # well past the 200 ms stale window (+ delivery delay)
    assert all(not np.any(a[:6]) for a in late), late  # only holds
    assert_at_rest(h)
    assert_all_sent_within_limits(h)


@pytest.mark.parametrize("kind", ["nan", "oversize"])
def test_bad_actions_never_reach_the_arm(world, sim_ip, tmp_path, kind):
    h = world
    make_franka(h, sim_ip)
    make_policy(h, write_scripted_checkpoint(tmp_path / "p.json", SPEC, STEP_X, fault={"kind": kind, "after_calls": 1}))
    h.start_camera()
    h.wait_for(lambda: len(h.poses) > 3, WAIT_S, "arm state")
    start_policy(h)
    key = "rejected" if kind == "nan" else "modified"
    h.wait_for(lambda: h.status.get("franka", {}).get(key, 0) >= 6, WAIT_S, f"{key} commands")
    time.sleep(0.5)
    h.call("/policy/stop")
    h.wait_for(lambda: h.status.get("franka", {}).get("state") == "holding", WAIT_S, "command timeout -> holding")
    assert_at_rest(h)
    assert_all_sent_within_limits(h)
    with h.lock:
        raw = [a for _, a, _ in h.actions]
    assert any(not np.all(np.isfinite(a)) or np.linalg.norm(a[:3]) > 0.5 for a in raw)  # the fault did happen


def test_policy_exception_stops_and_arm_holds(world, sim_ip, tmp_path):
    h = world
    make_franka(h, sim_ip)
    make_policy(h, write_scripted_checkpoint(tmp_path / "p.json", SPEC, STEP_X, fault={"kind": "raise", "after_calls": 2}))
    h.start_camera()
    h.wait_for(lambda: len(h.poses) > 3, WAIT_S, "arm state")
    start_policy(h)
    h.wait_for(lambda: h.status.get("policy", {}).get("state") == "faulted", WAIT_S, "policy fault")
    assert "injected policy failure" in h.status["policy"]["faults"][-1]
    h.wait_for(lambda: h.status.get("franka", {}).get("state") == "holding", WAIT_S, "command timeout -> holding")
    assert_at_rest(h)
    assert_all_sent_within_limits(h)


def test_estop_stops_and_ignores_commands_until_reset(world, sim_ip, tmp_path):
    h = world
    make_franka(h, sim_ip)
    make_policy(h, write_scripted_checkpoint(tmp_path / "p.json", SPEC, STEP_X))
    h.start_camera()
    h.wait_for(lambda: len(h.poses) > 3, WAIT_S, "arm state")
    start_policy(h)
    h.wait_for(lambda: len(h.applied) >= 5, WAIT_S, "commands")
    assert h.call("/franka/estop").success
    h.wait_for(lambda: h.status.get("franka", {}).get("state") == "estopped", WAIT_S, "estopped")
    n_applied = len(h.applied)
    h.wait_for(lambda: h.status["franka"]["ignored"] >= 3, WAIT_S, "commands ignored after e-stop")
    assert len(h.applied) == n_applied
    assert_at_rest(h)
    r = h.call("/franka/reset")  # re-arms: the lifecycle is still active, so the tracker restarts at the pose
    assert r.success, r.message
    wait_moved_x(h, h.poses[-1][1], 0.015)
    assert_all_sent_within_limits(h)


def test_policy_node_killed_arm_holds(world, sim_ip, tmp_path, ros_env):
    h = world
    make_franka(h, sim_ip)
    ckpt = write_scripted_checkpoint(tmp_path / "p.json", SPEC, STEP_X)
    args = [f"{k}:={json.dumps(v) if isinstance(v, bool) else v}" for k, v in policy_params(ckpt, autostart=True).items()]
    ros_args = [a for kv in args for a in ("-p", kv)]
    proc = subprocess.Popen([sys.executable, "-m", "robot_bridge.nodes.policy_node", "--ros-args", *ros_args],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        h.start_camera()
        try:
            h.wait_for(lambda: len(h.applied) >= 5, 90, "commands from the policy process")
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"{h.probe.get_node_names()} {os.environ['ROS_DOMAIN_ID']} {ros_env['ROS_DOMAIN_ID']}" + proc.communicate()[0].decode()[-3000:]) from None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        h.wait_for(lambda: h.status.get("franka", {}).get("state") == "holding", WAIT_S, "command timeout -> holding")
        assert_at_rest(h)
        assert_all_sent_within_limits(h)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
