"""A domain's greenscreen background in the twin env: the frame is the background wherever the camera's segmentation
shows neither the robot nor a task object, the render elsewhere; no background changes nothing. One pick_place env
per domain for the module (lavapipe compiles its shaders once per process)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from cotrain.calibration.twin_render import render_labelled
from cotrain.data.spec import IMAGE_KEY
from cotrain.envs import load_task_config, make_task_env
from cotrain.envs.config import ConfigError, TaskConfig

pytestmark = [
    pytest.mark.sapien,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mani_skill"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:sapien"),
]


def checkerboard(height: int, width: int, cell: int = 8) -> np.ndarray:
    """Magenta and dark-green cells of `cell` pixels: colours the twin never renders."""
    ys, xs = np.mgrid[:height, :width]
    odd = ((ys // cell + xs // cell) % 2).astype(bool)
    return np.where(odd[..., None], np.array([255, 0, 255], np.uint8), np.array([0, 90, 0], np.uint8))


def with_background(cfg: TaskConfig, domain: str, background: str, source: str) -> TaskConfig:
    dom = dataclasses.replace(cfg.domain(domain), background=background)
    return dataclasses.replace(cfg, domains={**cfg.domains, domain: dom}, source=source)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    cfg = load_task_config("pick_place")
    folder = tmp_path_factory.mktemp("scene")
    background = checkerboard(cfg.camera.height, cfg.camera.width)
    Image.fromarray(background).save(folder / "empty.png")
    return folder, background


@pytest.fixture(scope="module")
def envs(board):
    folder, _ = board
    cfg = load_task_config("pick_place")
    green = with_background(cfg, "sim", "empty.png", source=str(folder / "pick_place.yaml"))  # relative to the yaml
    built = {"plain": make_task_env(cfg, "sim", obs_mode="rgb"), "green": make_task_env(green, "sim", obs_mode="rgb")}
    yield built
    for env in built.values():
        env.close()


def robot_and_object_ids(env) -> set[int]:
    """Worked out from the scene by name: every robot link, the object and the tray (not the table or the floor)."""
    ids = {int(link.per_scene_id[0]) for link in env.agent.robot.get_links()}
    names = {name: actor for name, actor in env.scene.actors.items()}
    assert {"table", "ground"} <= set(names)
    return ids | {int(a.per_scene_id[0]) for n, a in names.items() if n not in ("table", "ground")}


def test_the_frame_is_the_background_off_the_robot_and_objects_and_the_render_on_them(envs, board):
    _, background = board
    env = envs["green"]
    obs, _ = env.reset(seed=3)
    frame = obs[IMAGE_KEY][0].cpu().numpy()
    _, seg, render = render_labelled(env)  # the camera's own render and segmentation of the same state
    keep = np.isin(seg, list(robot_and_object_ids(env)))
    assert 0.05 < keep.mean() < 0.6  # the robot and the objects are in view, the table and floor around them
    np.testing.assert_array_equal(frame[~keep], background[~keep])
    np.testing.assert_array_equal(frame[keep], render[keep])
    plain, _ = envs["plain"].reset(seed=3)  # the same episode without a background: the render everywhere
    np.testing.assert_array_equal(frame[keep], plain[IMAGE_KEY][0].cpu().numpy()[keep])


def test_the_greenscreen_follows_the_arm_after_a_step(envs, board):
    _, background = board
    env = envs["green"]
    env.reset(seed=5)
    obs, *_ = env.step(np.array([0.05, 0.05, -0.05, 0, 0, 0, 1], np.float32))
    frame = obs[IMAGE_KEY][0].cpu().numpy()
    _, seg, render = render_labelled(env)
    keep = np.isin(seg, list(robot_and_object_ids(env)))
    np.testing.assert_array_equal(np.where(keep[..., None], render, background), frame)


def test_a_domain_without_background_renders_no_segmentation_and_the_same_frames(envs):
    env = envs["plain"]
    assert env.obs_mode == "rgb" and envs["green"].obs_mode == "rgb+segmentation"
    first = env.reset(seed=7)[0][IMAGE_KEY][0].cpu().numpy()
    fresh = make_task_env(load_task_config("pick_place"), "sim", obs_mode="rgb")
    try:
        again = fresh.reset(seed=7)[0][IMAGE_KEY][0].cpu().numpy()
    finally:
        fresh.close()
    np.testing.assert_array_equal(first, again)
    _, _, render = render_labelled(env)
    np.testing.assert_array_equal(first, render)  # nothing composited over the sim's render


def test_a_missing_background_is_one_config_error_naming_domain_and_path(tmp_path):
    cfg = with_background(load_task_config("pick_place"), "sim", "nowhere.png", source=str(tmp_path / "t.yaml"))
    with pytest.raises(ConfigError) as e:
        make_task_env(cfg, "sim", obs_mode="rgb")
    assert str(e.value) == (f"{tmp_path}/t.yaml: domains.sim.background {tmp_path}/nowhere.png: no such file "
                            f"(expected a PNG of shape [128, 128, 3], the camera's size)")


def test_a_background_of_the_wrong_size_is_one_config_error_naming_the_shapes(tmp_path):
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "small.png")
    cfg = with_background(load_task_config("pick_place"), "sim", str(tmp_path / "small.png"), source="x.yaml")
    with pytest.raises(ConfigError) as e:
        make_task_env(cfg, "sim", obs_mode="state")
    assert str(e.value) == (f"x.yaml: domains.sim.background {tmp_path}/small.png: shape [64, 96, 3], expected "
                            f"[128, 128, 3] (the camera's height, width, 3)")


def test_background_paths_resolve_against_the_config_file(tmp_path):
    cfg = load_task_config("pick_place")
    assert cfg.background_path("sim") is None
    relative = with_background(cfg, "sim", "bg/empty.png", source=str(tmp_path / "pick_place.yaml"))
    assert relative.background_path("sim") == tmp_path / "bg" / "empty.png"
    absolute = with_background(cfg, "sim", "/data/empty.png", source=str(tmp_path / "pick_place.yaml"))
    assert str(absolute.background_path("sim")) == "/data/empty.png"


def test_every_sub_scene_gets_the_one_background_and_keeps_its_own_ids():
    """The batched composite (num_envs = 2 needs physx_cuda; its arithmetic does not): scene 0 keeps id 1, scene 1
    keeps id 2; the same segmentation row keeps different pixels in each."""
    import torch

    from cotrain.envs.base import TwinTaskEnv

    background = checkerboard(2, 3, cell=1)
    stub = type("Stub", (), {})()
    stub._background = background
    stub._keep_table = torch.tensor([[False, True, False], [False, False, True]])
    rgb = torch.stack([torch.full((2, 3, 3), 10, dtype=torch.uint8), torch.full((2, 3, 3), 20, dtype=torch.uint8)])
    seg = torch.tensor([[[0, 1, 2], [2, 1, 0]]] * 2, dtype=torch.int16)[..., None]
    frames = TwinTaskEnv._greenscreen(stub, rgb, seg).numpy()
    expected = np.stack([background, background])
    expected[0][seg[0, ..., 0].numpy() == 1] = 10
    expected[1][seg[1, ..., 0].numpy() == 2] = 20
    np.testing.assert_array_equal(frames, expected)
    assert frames[0, 0, 1].tolist() == [10] * 3 and frames[1, 0, 1].tolist() == background[0, 1].tolist()
