"""The policy node running the scripted test policy (`doubles.bridge.load_scripted_policy`) in a process of its own:
    python -m doubles.scripted_policy_node --ros-args --params-file f.yaml      (with tests/ on PYTHONPATH)
`checkpoint` names the scripted policy's JSON file; every other parameter is the policy node's.
"""

from __future__ import annotations

from doubles.bridge import load_scripted_policy
from robot_bridge.nodes import run
from robot_bridge.nodes.policy_node import NODE_NAME, PolicyNode  # noqa: F401 - `run` reads this module's NODE_NAME


class ScriptedPolicyNode(PolicyNode):
    def __init__(self, **kwargs) -> None:
        super().__init__(load=load_scripted_policy, **kwargs)


if __name__ == "__main__":
    run(ScriptedPolicyNode)
