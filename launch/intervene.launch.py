"""HG-DAgger interventions: the policy drives, an operator takes over at any key press (teleop in intervene mode) and
hands back with `h`; the recorder flags every frame the operator drove. One process per node.

    ros2 launch launch/intervene.launch.py robot_config:=franka checkpoint:=runs/x/ckpt dataset:=datasets/real/pick_dagger \
        instruction:="..."

The nodes and their parameters come from robot_bridge.graph, the same list `python -m robot_bridge.deploy
profile=intervene` runs in one process (tests/test_launch.py checks they agree).
"""

from robot_bridge.launch_common import launch_description


def generate_launch_description():
    return launch_description("intervene")
