"""What the twin renders for calibration: the scene as a labelled point cloud, and the empty scene at home.

Reads the twin's own camera (position + segmentation textures) only; nothing here looks at another domain.
"""

from __future__ import annotations

import numpy as np
import sapien
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


RENDER_FOV_SCALE = 1.3
RENDER_SIZE_SCALE = 2
"""The calibration render sees a wider view (fov × 1.3) at twice the resolution of the task camera, so the twin's
points cover the frame of a camera a few centimetres away, about two points per camera pixel."""


def calibration_render_config(task_cfg):
    """The task config with the wider, sharper camera that `silhouette_points` renders with."""
    import dataclasses

    cam = task_cfg.camera
    wide = dataclasses.replace(cam, fov=cam.fov * RENDER_FOV_SCALE, width=cam.width * RENDER_SIZE_SCALE,
                               height=cam.height * RENDER_SIZE_SCALE)
    return dataclasses.replace(task_cfg, camera=wide)


def set_arm(env, qpos: np.ndarray) -> None:
    """Put the twin's arm at recorded joint positions ([7] arm, or [9] with the two finger joints)."""
    q = np.array(REST_QPOS, dtype=np.float32)
    q[: len(qpos)] = qpos
    env.agent.reset(torch.tensor(q)[None])
    env.agent.robot.set_pose(sapien.Pose(p=list(ROBOT_BASE_XYZ)))


def _link_poses(env) -> dict[int, np.ndarray]:
    return {int(link.per_scene_id[0]): link.pose.raw_pose[0].cpu().numpy() for link in env.agent.robot.get_links()}


def silhouette_points(env, qpos: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """What the twin renders for the calibration motion (the empty scene), as world points [P, 3]: every robot link
    at home, and for each recorded joint state [N, 7 or 9] the links that moved from home, (at home, at the state)."""
    show_empty_scene_at_home(env)
    world, seg, _ = render_labelled(env)
    home_poses = _link_poses(env)
    robot = world[np.isin(seg, list(home_poses))]
    out = []
    for q in np.asarray(qpos, dtype=np.float64):
        set_arm(env, q)
        moved = [i for i, p in _link_poses(env).items() if np.abs(p - home_poses[i]).max() > 1e-4]
        at_q, seg_q, _ = render_labelled(env)
        out.append((world[np.isin(seg, moved)], at_q[np.isin(seg_q, moved)]))
    show_empty_scene_at_home(env)
    return robot, out


def capture_background(env, count: int, seed: int = 0) -> np.ndarray:
    """`count` frames of the empty scene, arm at home, from the env's camera (uint8 [N, H, W, 3]); each after a reset
    with its own seed (its own sensor noise). On the real-proxy this is the simulated capture a real robot records."""
    frames = []
    for i in range(count):
        env.reset(seed=seed + i)
        show_empty_scene_at_home(env)
        frames.append(observed_frame(env))
    return np.stack(frames)


def capture_motion(env, qpos: np.ndarray, seed: int = 1000) -> np.ndarray:
    """One frame of the empty scene per joint state [N, 7 or 9], as `capture_background` (uint8 [N, H, W, 3])."""
    frames = []
    for i, q in enumerate(np.asarray(qpos)):
        env.reset(seed=seed + i)
        show_empty_scene_at_home(env)
        set_arm(env, q)
        frames.append(observed_frame(env))
    return np.stack(frames)


def show_demo_scene(env, scene) -> tuple[int, int]:
    """The first frame of a pick_place demo (`demo_scene.DemoScene`): the robot at home, the object of the scene's
    shape at its xy and yaw on the table, the tray at its xy, every other object out of view. Returns the
    segmentation ids (object, tray)."""
    from cotrain.envs.pick_place import PickPlaceEnv

    if not isinstance(env.unwrapped, PickPlaceEnv) or scene.shape not in env.shape_names:
        raise ValueError(f"show_demo_scene needs a pick_place env with shape {scene.shape!r}")
    show_empty_scene_at_home(env)
    k = env.shape_names.index(scene.shape)
    obj, (x, y), yaw = env.objects[k], scene.object_xy, scene.object_yaw
    obj.set_pose(sapien.Pose(p=[x, y, env.shapes[scene.shape].half_height + 1e-3],
                             q=[np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]))
    env.tray.set_pose(sapien.Pose(p=[*scene.tray_xy, 0.0]))
    return int(obj.per_scene_id[0]), int(env.tray.per_scene_id[0])
