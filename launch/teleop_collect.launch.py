"""Collect teleoperated demonstrations: camera, franka, teleop and recorder nodes, one process each.

    ros2 launch launch/teleop_collect.launch.py robot_config:=franka dataset:=datasets/real/pick instruction:="..."

The nodes and their parameters come from robot_bridge.graph, the same list `python -m robot_bridge.deploy
profile=teleop_collect` runs in one process (tests/test_launch.py checks they agree).
"""

from robot_bridge.launch_common import launch_description


def generate_launch_description():
    return launch_description("teleop_collect")
