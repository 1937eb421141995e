"""Image -> command latency and missed ticks of the policy node at 30 Hz on CPU.

    python benchmarks/bridge_latency.py [--seconds 34] [--fps 30] [--n-action-steps 0] [--torch-threads 1] [--prefetch-ticks 2]

The policy node runs as its own process (as the launch file starts it) with a freshly initialised small VLA
checkpoint (cotrain's default policy, random weights: the latency does not depend on the weights), loaded through
the real loader. This process plays camera (fps, 128x128 rgb8) and arm state (50 Hz) and records every /action with its DDS
message info:
    latency      image stamp (capture) -> the action's publication in the policy node (DDS source timestamp,
                 the node's own clock: what the node adds, independent of this process's scheduling)
    delivered    image stamp -> reception here (adds the return trip and this process's wake-up)
    (--prefetch-ticks 0: synchronous, one tick in chunk_size runs the policy; --n-action-steps 1 runs it on every
    tick, the worst case; --prefetch-ticks L >= 1: the policy runs L ticks ahead in a worker thread)
    missed       expected ticks (seconds · fps) minus policy actions received (holds and waits do not count);
                 `gaps` counts intervals between consecutive actions longer than 1.5 periods
    holds / waits / late from the node's status (stale-observation holds; pipelined ticks whose chunk was not ready;
                 ticks taken by the timer after a late frame)
The 1-minute load average is printed at the start and the end: the numbers move with the machine's load.
Traffic stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a random ROS_DOMAIN_ID).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TESTS_DIR = REPO / "tests"


def make_checkpoint(path: Path, fps: int, chunk_size: int) -> Path:
    import torch
    import yaml

    from cotrain.data.spec import FeatureSpec
    from cotrain.policies.checkpoint import save_checkpoint
    from cotrain.policies.factory import make_policy, policy_config_from_dict

    spec = FeatureSpec(fps=fps)
    stats = {
        "observation.state": {"mean": torch.zeros(8), "std": torch.ones(8), "min": -torch.ones(8), "max": torch.ones(8)},
        "action": {"mean": torch.zeros(7), "std": torch.full((7,), 0.01), "min": torch.full((7,), -0.02),
                   "max": torch.full((7,), 0.02)},
    }
    torch.manual_seed(0)
    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs/policy/vla_flow.yaml").read_text())
    config["chunk_size"] = chunk_size  # the shipped default policy, at the benchmark's chunk size
    policy = make_policy(policy_config_from_dict(config, where="configs/policy/vla_flow.yaml"), spec, stats,
                         load_pretrained=False)
    return save_checkpoint(path, policy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=34.0, help="measured duration (34 s = 1020 ticks at 30 Hz)")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--n-action-steps", type=int, default=0, help="0 = whole chunk; 1 = run the policy every tick")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--prefetch-ticks", type=int, default=2,
                    help="0 = synchronous inference in the tick (the twin's mode); 2 = 67 ms for the policy at 30 Hz")
    ap.add_argument("--policy", choices=("small_vla", "scripted"), default="small_vla",
                    help="scripted = a constant policy: the transport and executor floor without inference")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args()

    sys.path.insert(0, str(TESTS_DIR))  # the ROS probe and process helpers are the tests' (tests/doubles)
    from doubles.bridge import RosHarness
    from doubles.sandbox import ChildProcess, isolated_ros_env, remove_dead_shm_segments, shm_segments

    env = isolated_ros_env()
    shm_before = shm_segments()
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})
    tmp = Path(tempfile.mkdtemp(prefix="bridge_latency_"))
    if args.policy == "small_vla":
        ckpt, module = make_checkpoint(tmp / "ckpt", args.fps, args.chunk_size), "robot_bridge.nodes.policy_node"
    else:
        from cotrain.data.spec import FeatureSpec
        from doubles.bridge import write_scripted_checkpoint

        ckpt = write_scripted_checkpoint(tmp / "ckpt.json", FeatureSpec(fps=args.fps), [0.0] * 7, args.chunk_size)
        module = "doubles.scripted_policy_node"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH", "")]))
    params = {"checkpoint": str(ckpt), "task": "pick up the red cube", "fps": args.fps, "autostart": "true",
              "n_action_steps": args.n_action_steps, "torch_threads": args.torch_threads, "stale_obs_ms": 200.0, "tick_tolerance_ms": 10.0,
              "prefetch_ticks": args.prefetch_ticks}
    proc = ChildProcess(module,
                        ["--ros-args", *[a for k, v in params.items() for a in ("-p", f"{k}:={v}")]], env, tmp / "policy.log")
    load_start = os.getloadavg()[0]
    h = RosHarness(threads=1)  # camera, state and the action sink in one Python thread, like a camera node
    try:
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import JointState

        from robot_bridge import messages, topics

        pose_pub = h.probe.create_publisher(PoseStamped, topics.EE_POSE, 10)
        joint_pub = h.probe.create_publisher(JointState, topics.JOINT_STATES, 10)

        def state_tick():
            now = h.probe.get_clock().now().nanoseconds
            pose_pub.publish(messages.pose_msg([0.5, 0.0, 0.3], [1.0, 0, 0, 0], now))
            joint_pub.publish(messages.joint_state_msg(np.zeros(7), [0.04, 0.04], now))

        h.probe.create_timer(1.0 / 50, state_tick)  # 50 Hz arm state
        receipts: list[tuple[int, int, int]] = []  # (published ns, received ns, image stamp ns)
        h.probe.create_subscription(
            JointState, topics.ACTION,
            lambda m, info: receipts.append((info["source_timestamp"], info["received_timestamp"],
                                             messages.stamp_to_ns(m.header.stamp))), 100,
        )
        h.start_camera(rate_hz=args.fps)
        h.wait_for(lambda: h.status.get("policy", {}).get("acts", 0) >= args.fps, 180, "the policy node to act")
        warm_status = dict(h.status["policy"])
        n0 = len(receipts)
        time.sleep(args.seconds)
        status = dict(h.status["policy"])
        got = receipts[n0:]
    finally:
        h.close()
        proc.stop()
        remove_dead_shm_segments(keep=shm_before)

    period_ns = 1e9 / args.fps
    pub, recv, stamps = (np.array(c, dtype=np.float64) for c in zip(*got))
    answered = stamps > 0
    lat_ms = (pub[answered] - stamps[answered]) / 1e6
    delivered_ms = (recv[answered] - stamps[answered]) / 1e6
    gaps = np.diff(pub) / period_ns
    expected = int(round(args.seconds * args.fps))
    steps = args.n_action_steps or args.chunk_size

    def pct(x):
        return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)), "max": float(x.max()),
                "mean": float(x.mean())}

    summary = {
        "fps": args.fps, "seconds": args.seconds, "ticks": len(got), "policy_actions": int(answered.sum()),
        "expected_ticks": expected, "missed_ticks": max(0, expected - int(answered.sum())),
        "gaps_over_1.5_periods": int(np.sum(gaps > 1.5)),
        **{k: status[k] - warm_status[k] for k in ("holds", "waits", "late", "inferences")},
        "policy": args.policy, "n_action_steps": steps, "prefetch_ticks": args.prefetch_ticks,
        "torch_threads": args.torch_threads, "chunk_age_ms": status["chunk_age_ms"],
        "latency_ms": pct(lat_ms), "delivered_ms": pct(delivered_ms),
        "loadavg_1min": {"start": load_start, "end": os.getloadavg()[0]}, "cpus": os.cpu_count(),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
