"""Serve a checkpoint on the arm: camera, franka, policy and recorder nodes, one process each.

    ros2 launch launch/deploy_policy.launch.py robot_config:=franka_sim checkpoint:=runs/x/ckpt instruction:="..."

The nodes and their parameters come from robot_bridge.graph, the same list `python -m robot_bridge.deploy` runs in
one process (tests/test_launch.py checks they agree).
"""

from robot_bridge.launch_common import launch_description


def generate_launch_description():
    return launch_description("deploy_policy")
