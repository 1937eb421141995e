"""What both launch files build: launch_ros `Node`s from `graph.node_specs`, resolved at launch time.

`launch` / `launch_ros` are imported inside the functions: they exist only where ROS 2 is installed from a
distribution (the PyPI package named `launch` is something else and must not be used).
"""

from __future__ import annotations

ARGUMENTS = {
    "robot_config": ("franka_sim", "Name of a ROS parameter file in configs/robot, or a path to one."),
    "checkpoint": ("", "Policy checkpoint directory (empty keeps the robot config's)."),
    "instruction": ("", "Task instruction for the policy and the recorder (empty keeps the robot config's)."),
    "dataset": ("", "Recorder dataset root (empty keeps the robot config's)."),
    "activate": ("true", "Configure and activate the arm at start-up."),
}


def nodes_for(profile: str, args: dict[str, str]):
    """The launch_ros Nodes of `profile` for resolved launch arguments."""
    from launch_ros.actions import Node

    from robot_bridge.graph import node_specs, overrides_for

    overrides = overrides_for(args["checkpoint"], args["instruction"], args["dataset"],
                              args["activate"].lower() == "true", start=False)
    nodes = []
    for spec in node_specs(profile, args["robot_config"], overrides):
        executable, *arguments = spec.command()
        nodes.append(Node(executable=executable, arguments=arguments, name=spec.name, parameters=[spec.params],
                          output="screen", emulate_tty=True))
    return nodes


def launch_description(profile: str):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    def setup(context, *args, **kwargs):
        values = {k: LaunchConfiguration(k).perform(context) for k in ARGUMENTS}
        return nodes_for(profile, values)

    declared = [DeclareLaunchArgument(k, default_value=d, description=doc) for k, (d, doc) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=setup)])
