"""The ManiSkill real-proxy twin as the arm (NOT IMPLEMENTED YET; see docs/robot_bridge.md, "Twin backend").

Planned contract, so the franka node needs no change beyond publishing the camera:
    connect()   make_task_env(load_task_config(twin_env), domain="real_proxy", obs_mode="rgb") ; nothing stepped
    start()     env.reset(seed=twin_seed + episode) ; publishes the first frame
    read()      ee pose / fingers from the env's agent (state convention: cotrain.envs.robot.ee_state)
    reference_xyz()  the measured TCP position (the env applies deltas to the current pose, as pd_ee_delta_pose does)
    apply(a)    env.step(a) once per command: the env is the clock; the new camera frame is then published on
                /camera/image_raw, so the policy node answers it exactly as cotrain.eval would
    hold()      env.step(zero motion, same gripper)
    camera()    -> (uint8 HxWx3, stamp) of the last step, read by the franka node after each apply/start
"""

from __future__ import annotations

from robot_bridge.params import FrankaParams


class TwinBackend:
    def __init__(self, p: FrankaParams) -> None:
        raise NotImplementedError(
            "franka.backend=twin: the twin backend is not implemented yet (robot_bridge/backends/twin_backend.py "
            "documents its contract); use backend=franky with franky-sim"
        )
