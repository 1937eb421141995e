"""Image -> command latency and missed ticks of the policy node at 30 Hz on CPU.

    python benchmarks/bridge_latency.py [--seconds 34] [--fps 30] [--n-action-steps 0] [--torch-threads 1]

The policy node runs as its own process (as the launch file starts it) with a freshly initialised small VLA
checkpoint (cotrain's default policy, random weights: the latency does not depend on the weights), loaded through
the real loader. This process plays camera (fps, 128x128 rgb8) and arm state (50 Hz) and records every /action:
    latency      receive time - the stamp of the image the action answers (same host clock)
    (with the default whole-chunk execution one tick in chunk_size runs the policy; --n-action-steps 1 runs it on
    every tick, the worst case)
    missed       expected ticks (seconds · fps) minus actions received; `gaps` counts intervals between consecutive
                 actions longer than 1.5 periods (jitter of the camera and of both processes shows up there)
    holds / late from the node's status (stale-observation holds; ticks taken by the timer after a late frame)
Traffic stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a random ROS_DOMAIN_ID).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_checkpoint(path: Path, fps: int, chunk_size: int) -> Path:
    import torch

    from cotrain.data.spec import FeatureSpec
    from cotrain.policies.checkpoint import save_checkpoint
    from cotrain.policies.configuration_vla import SmallVLAConfig
    from cotrain.policies.factory import make_policy

    spec = FeatureSpec(fps=fps)
    stats = {
        "observation.state": {"mean": torch.zeros(8), "std": torch.ones(8), "min": -torch.ones(8), "max": torch.ones(8)},
        "action": {"mean": torch.zeros(7), "std": torch.full((7,), 0.01), "min": torch.full((7,), -0.02),
                   "max": torch.full((7,), 0.02)},
    }
    torch.manual_seed(0)
    policy = make_policy(SmallVLAConfig(chunk_size=chunk_size), spec, stats, load_pretrained=False)
    return save_checkpoint(path, policy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=34.0, help="measured duration (34 s = 1020 ticks at 30 Hz)")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--n-action-steps", type=int, default=0, help="0 = whole chunk; 1 = run the policy every tick")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--policy", choices=("small_vla", "scripted"), default="small_vla",
                    help="scripted = a constant policy: the transport and executor floor without inference")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args()

    from robot_bridge.testing import RosHarness, isolated_ros_env

    env = isolated_ros_env()
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})
    tmp = Path(tempfile.mkdtemp(prefix="bridge_latency_"))
    if args.policy == "small_vla":
        ckpt, loader = make_checkpoint(tmp / "ckpt", args.fps, args.chunk_size), "cotrain.policies.checkpoint:load_policy"
    else:
        from cotrain.data.spec import FeatureSpec
        from robot_bridge.testing import write_scripted_checkpoint

        ckpt = write_scripted_checkpoint(tmp / "ckpt.json", FeatureSpec(fps=args.fps), [0.0] * 7, args.chunk_size)
        loader = "robot_bridge.testing:load_scripted_policy"
    params = {"checkpoint": str(ckpt), "policy_loader": loader, "task": "pick up the red cube", "fps": args.fps, "autostart": "true",
              "n_action_steps": args.n_action_steps, "torch_threads": args.torch_threads, "stale_obs_ms": 200.0, "tick_tolerance_ms": 10.0}
    proc = subprocess.Popen(
        [sys.executable, "-m", "robot_bridge.nodes.policy_node", "--ros-args",
         *[a for k, v in params.items() for a in ("-p", f"{k}:={v}")]],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
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
        receipts: list[tuple[int, int]] = []  # (receive ns, image stamp ns)
        h.probe.create_subscription(
            JointState, topics.ACTION,
            lambda m: receipts.append((time.time_ns(), messages.stamp_to_ns(m.header.stamp))), 100,
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
        proc.kill()
        proc.wait()

    period_ns = 1e9 / args.fps
    recv = np.array([r for r, _ in got], dtype=np.float64)
    stamps = np.array([s for _, s in got], dtype=np.float64)
    answered = stamps > 0
    lat_ms = (recv[answered] - stamps[answered]) / 1e6
    gaps = np.diff(recv) / period_ns
    missed = max(0, int(round(args.seconds * args.fps)) - len(got))
    inferences = status["inferences"] - warm_status["inferences"]
    ticks = len(got)
    steps = args.n_action_steps or args.chunk_size
    summary = {
        "fps": args.fps, "seconds": args.seconds, "ticks": ticks, "expected_ticks": int(round(args.seconds * args.fps)),
        "missed_ticks": missed, "gaps_over_1.5_periods": int(np.sum(gaps > 1.5)), "holds": status["holds"] - warm_status["holds"], "late": status["late"] - warm_status["late"],
        "policy": args.policy, "inferences": inferences, "n_action_steps": steps, "torch_threads": args.torch_threads,
        "latency_ms": {"p50": float(np.percentile(lat_ms, 50)), "p99": float(np.percentile(lat_ms, 99)),
                       "max": float(lat_ms.max()), "mean": float(lat_ms.mean())},
        "loadavg_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
