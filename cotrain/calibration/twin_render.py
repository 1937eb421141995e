"""What the twin renders for calibration: the scene as a labelled point cloud, and the empty scene at home.

Reads the twin's own camera (position + segmentation textures) only; nothing here looks at another domain.
"""

from __future__ import annotations

import numpy as np
import torch

from cotrain.calibration.camera_pose import CameraPose
from cotrain.envs.base import CAMERA_NAME
from cotrain.envs.robot import REST_QPOS, ROBOT_BASE_XYZ

PARK_Z = -10.0
"""Where task objects wait, out of view, while the empty scene is rendered."""


def env_camera(env) -> CameraPose:
    """The camera pose and fov a twin env renders with (task camera + the domain's offsets)."""
    cam, dom = env.task_cfg.camera, env.domain
    return CameraPose.look_at(np.add(cam.eye, dom.camera_eye_offset), np.add(cam.target, dom.camera_target_offset),
                              cam.fov)


def show_empty_scene_at_home(env) -> None:
    """Put the robot at its home joints and move every task object out of view (what the empty-scene frames show)."""
    import sapien

    env.agent.reset(torch.tensor(REST_QPOS, dtype=torch.float32)[None])
    env.agent.robot.set_pose(sapien.Pose(p=list(ROBOT_BASE_XYZ)))
    robot_ids = {int(link.per_scene_id[0]) for link in env.agent.robot.get_links()}
    keep = {"table", "ground"}
    for seg_id, obj in env.segmentation_id_map.items():
        if seg_id in robot_ids or getattr(obj, "name", "") in keep or not hasattr(obj, "set_pose"):
            continue
        try:
            obj.set_pose(sapien.Pose(p=[0.0, 0.0, PARK_Z - seg_id]))
        except Exception:  # static actors (none among task objects) cannot move
            continue


def render_labelled(env) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(world xyz [H, W, 3], segmentation id [H, W], rgb uint8 [H, W, 3]) of the env's camera, as rendered now."""
    cam = env._sensors[CAMERA_NAME]
    env.scene.update_render()
    cam.capture()
    obs = cam.get_obs(rgb=True, depth=False, position=True, segmentation=True)
    pos = obs["position"][0].cpu().numpy().astype(np.float64) / 1000.0  # mm, OpenGL camera frame
    model = cam.camera.get_model_matrix()[0].cpu().numpy().astype(np.float64)
    world = pos @ model[:3, :3].T + model[:3, 3]
    seg = obs["segmentation"][0, ..., 0].cpu().numpy().astype(np.int64)
    return world, seg, obs["rgb"][0].cpu().numpy()


def observed_frame(env) -> np.ndarray:
    """The env's camera observation as it stands (with the domain's camera effects), uint8 [H, W, 3]."""
    from cotrain.data.spec import IMAGE_KEY

    env.scene.update_render()
    return env.get_obs()[IMAGE_KEY][0].cpu().numpy()
