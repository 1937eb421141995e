"""All bridge nodes in one process: `python -m robot_bridge.deploy [key=value ...]` (Hydra, configs/deploy.yaml).

The node list and parameters come from `graph.node_specs`, exactly what launch/*.launch.py start as separate
processes. `episodes=N` runs N episodes of `episode_s` seconds (activate the arm, start recording and the policy,
then stop all three; the twin backend resets its env on each activation, and its episode ends when the env says so,
`episode_s` being a cap); `episodes=0` runs until Ctrl-C.
`print_nodes=true` prints the resolved node list as JSON and exits (what the launch test compares).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from robot_bridge.graph import PROFILES, node_specs, overrides_for
from robot_bridge.nodes import EXIT_TIMEOUT_S, callbacks_done


@dataclass
class DeployConfig:
    profile: str = "deploy_policy"
    """deploy_policy (camera, franka, policy, recorder), teleop_collect (camera, franka, teleop, recorder), intervene
    (deploy_policy + teleop taking over) or calibrate (camera, franka, calibration motion, recorder)."""
    robot_config: str = "franka_sim"
    """Name of a ROS parameter file in configs/robot (or a path to one)."""
    checkpoint: str = ""
    """Policy checkpoint directory (deploy_policy); empty keeps the robot config's."""
    instruction: str = ""
    """Task instruction for the policy and the recorder; empty keeps the robot config's. (Not `task`: that name
    is the Hydra group of the training tasks.)"""
    dataset: str = ""
    """Recorder dataset root; empty keeps the robot config's."""
    activate: bool = True
    """Configure and activate the arm at start-up (otherwise drive its lifecycle by hand)."""
    episodes: int = 0
    """Episodes to run and record, then exit; 0 = run until Ctrl-C."""
    episode_s: float = 10.0
    """Length of one episode, s (twin backend: the longest wait for the env to end the episode)."""
    print_nodes: bool = False
    """Print the resolved node list as JSON and exit."""
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-node parameter overrides, e.g. +params.franka.robot_ip=127.0.0.5."""

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"deploy.profile={self.profile!r}: expected one of {sorted(PROFILES)}")
        if self.episodes < 0 or self.episode_s <= 0:
            raise ValueError(f"deploy.episodes={self.episodes} must be >= 0 and episode_s={self.episode_s} > 0")


ConfigStore.instance().store(name="deploy_schema", node=DeployConfig)


def specs_for(cfg: DeployConfig):
    overrides = overrides_for(cfg.checkpoint, cfg.instruction, cfg.dataset, cfg.activate, start=False)
    for node, values in cfg.params.items():
        overrides[node] = overrides.get(node, {}) | dict(values)
    return node_specs(cfg.profile, cfg.robot_config, overrides)


STARTERS = {"policy": "/policy/start", "calibration": "/calibration/start"}
"""The node that moves the arm in an episode, started after the recorder (and stopped before it saves)."""


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run_episodes(nodes: dict, cfg: DeployConfig, call) -> list[dict]:
    """Per episode: activate the arm, start recorder and policy, wait, stop policy, save, deactivate.

    Twin backend: the nodes first take the episode's instruction (/task), the wait ends when the env ends the episode
    and the recorder has every step; returns the twin's episodes (index, seed, instruction, steps, ret, done,
    success), [] for a real arm."""
    franka, results = nodes["franka"], []
    for ep in range(cfg.episodes):
        if franka.lifecycle_state == "inactive" and franka.trigger_activate().name != "SUCCESS":
            raise RuntimeError(f"episode {ep}: the arm did not activate")
        twin = franka.episode
        if twin is not None:
            takers = [nodes[n] for n in ("policy", "recorder") if n in nodes]
            if not _wait_until(lambda: all(n.task == twin["instruction"] for n in takers), 10.0):
                raise RuntimeError(f"episode {ep}: /task {twin['instruction']!r} did not reach the policy/recorder")
        for srv in ["/recorder/start"] + [STARTERS[n] for n in STARTERS if n in nodes]:
            r = call(srv)
            if not r.success:
                raise RuntimeError(f"episode {ep}: {srv} refused: {r.message}")
        if twin is None:
            time.sleep(cfg.episode_s)
        else:
            _wait_until(lambda: franka.episode["done"], cfg.episode_s)
        for n in STARTERS:
            if n in nodes:
                call(f"/{n}/stop")
        if twin is not None:  # the last applied actions may still be on their way to the recorder
            _wait_until(lambda: nodes["recorder"].writer.num_frames_buffered >= franka.episode["steps"], 5.0)
            results.append(franka.episode)
        print(f"episode {ep}: {call('/recorder/stop').message}" + (f"; twin {results[-1]}" if twin else ""), flush=True)
        franka.trigger_deactivate()
    return results


def deploy(cfg: DeployConfig, extra_nodes=None) -> list[dict]:
    """Run the graph; with `episodes` > 0 returns the twin's episodes (see `run_episodes`). `extra_nodes(nodes)`
    returns more nodes to run in this process beside the graph's (e.g. the twin's scripted operator)."""
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from robot_bridge.graph import make_node
    from robot_bridge.nodes import spin_bounded

    specs = specs_for(cfg)
    rclpy.init()
    executor = MultiThreadedExecutor()
    nodes: dict = {}
    try:
        # the arm last: a missing checkpoint or camera fails before the arm is activated
        for spec in sorted(specs, key=lambda s: s.name == "franka"):
            nodes[spec.name] = make_node(spec)
            executor.add_node(nodes[spec.name])
        for node in extra_nodes(nodes) if extra_nodes is not None else []:
            nodes[node.get_name()] = node
            executor.add_node(node)
        if cfg.episodes == 0:
            executor.spin()
            return []
        thread = threading.Thread(target=spin_bounded, args=(executor,), daemon=True)
        thread.start()
        client = rclpy.create_node("deploy")
        executor.add_node(client)
        return run_episodes(nodes, cfg, lambda srv: call_trigger(client, srv))
    except (KeyboardInterrupt, ExternalShutdownException):
        return []
    finally:
        executor.shutdown(timeout_sec=EXIT_TIMEOUT_S)
        clean = callbacks_done(executor, EXIT_TIMEOUT_S)
        for node in nodes.values():  # the franka node stops and disconnects the arm when destroyed
            node.destroy_node()
        rclpy.try_shutdown()
        if not clean:  # a callback stuck in a driver call would keep the interpreter from exiting
            print("deploy: a callback did not return after shutdown; exiting", file=sys.stderr, flush=True)
            os._exit(1)


def call_trigger(node, service: str, timeout: float = 120.0):
    """Call a std_srvs/Trigger service from `node` (spun by another thread) and return its response."""
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, service)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {service} not available")
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {service} did not answer in {timeout} s")
            time.sleep(0.01)
        return future.result()
    finally:
        node.destroy_client(client)


@hydra.main(config_path="../configs", config_name="deploy", version_base=None)
def main(dcfg) -> None:
    try:
        cfg: DeployConfig = OmegaConf.to_object(dcfg)
        if cfg.print_nodes:
            print(json.dumps([asdict(s) for s in specs_for(cfg)], indent=1))
            return
        deploy(cfg)
    except (ValueError, FileNotFoundError) as e:  # a bad config, checkpoint or camera: one line, nothing half-started
        sys.exit(f"deploy: {e}")


if __name__ == "__main__":
    main()
