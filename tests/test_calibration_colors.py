"""Where a demo's objects were (states, commands, task text) and the palette fit, on hand-made numbers. The run on
real-proxy demos is in tests/test_calibration_cli.py."""

import json

import numpy as np
import pytest

from cotrain.calibration.colors import fit_palette, palette_step
from cotrain.calibration.demo_scene import demo_scenes, find_scene
from cotrain.calibration.errors import CalibrationError
from cotrain.data.reader import store_from_episodes
from cotrain.envs.pick_place import SHAPES, instruction, parse_instruction
from cotrain.envs.robot import ROBOT_BASE_XYZ

OPEN, CLOSE = 1.0, -1.0


def episode(gripper, fingers, xy=None, yaw=0.3):
    """States [T, 8] and actions [T, 7] with the given gripper commands and finger positions (each finger's), the
    TCP at base-frame xy (T, 2) (default: moving 1 cm a step along x)."""
    t = len(gripper)
    xy = np.stack([0.5 + 0.01 * np.arange(t), np.zeros(t)], 1) if xy is None else np.asarray(xy)
    states = np.zeros((t, 8), np.float32)
    states[:, :2], states[:, 2], states[:, 3], states[:, 5] = xy, 0.1, np.pi, yaw
    states[:, 6] = states[:, 7] = fingers
    actions = np.zeros((t, 7), np.float32)
    actions[:, 6] = gripper
    return states, actions


# A pick: the close command at step 2, the fingers closing over steps 3-4 and stopping (2 cm each) at step 4; the open
# command at step 7, the fingers opening at step 8.
GRIPPER = [OPEN, OPEN, CLOSE, CLOSE, CLOSE, CLOSE, CLOSE, OPEN, OPEN, OPEN]
FINGERS = [0.04, 0.04, 0.04, 0.03, 0.02, 0.02, 0.02, 0.02, 0.03, 0.04]


def test_instructions_round_trip():
    for name in SHAPES:
        for color in ("red", "purple"):
            assert parse_instruction(instruction(color, name)) == (color, name)
    assert parse_instruction("put the small cube in the tray") == ("small", "cube")  # colour first, then the shape
    assert parse_instruction("open the drawer") is None
    assert parse_instruction("put the red sphere in the tray") is None


def test_the_object_is_where_the_fingers_stop_closing_and_the_tray_where_they_open():
    states, actions = episode(GRIPPER, FINGERS)
    scene = find_scene(states, actions, "put the blue block in the tray", "d")
    assert (scene.color, scene.shape, scene.grasp_step, scene.release_step) == ("blue", "block", 4, 8)
    base_x = ROBOT_BASE_XYZ[0]
    np.testing.assert_allclose(scene.object_xy, (base_x + 0.54, 0.0), atol=1e-6)  # world = base frame + base xyz
    np.testing.assert_allclose(scene.tray_xy, (base_x + 0.58, 0.0), atol=1e-6)
    assert scene.object_yaw == pytest.approx(0.3 - SHAPES["block"].grasp_yaw)  # TCP yaw less the grasp yaw


def test_an_episode_that_ends_before_the_fingers_open_puts_the_tray_at_its_last_step():
    states, actions = episode(GRIPPER[:9], FINGERS[:8] + [0.02])
    assert find_scene(states, actions, instruction("red", "cube"), "d").release_step == 8


def test_a_demo_without_a_grasp_is_one_error_naming_the_dataset_and_episode():
    grasp = episode(GRIPPER, FINGERS)
    never_closes = episode([OPEN] * 10, [0.04] * 10)
    on_nothing = episode(GRIPPER, [0.04, 0.04, 0.04, 0.02, 0.0, 0.0, 0.0, 0.0, 0.02, 0.04])
    never_opens = episode(GRIPPER[:7], FINGERS[:7])
    cases = [(never_closes, "the gripper is never commanded to close"),
             (on_nothing, "the fingers closed on nothing at step 4"), (never_opens, "the gripper never opens after the grasp at step 4")]
    for (states, actions), message in cases:
        frames = [[dict(image=np.zeros((4, 4, 3), np.uint8), state=s, action=a, task=instruction("red", "cube"))
                   for s, a in zip(*ep)] for ep in (grasp, (states, actions))]
        with pytest.raises(CalibrationError, match=f"^datasets/real episode 1: {message}"):
            demo_scenes(store_from_episodes(frames), "datasets/real")
    states, actions = grasp
    with pytest.raises(CalibrationError, match="d episode 0: task text 'open the drawer' is not a pick_place"):
        find_scene(states, actions, "open the drawer", "d episode 0")


def test_a_dataset_without_images_is_one_error_naming_it(tmp_path):
    from cotrain.calibrate import load_demos
    from cotrain.data import DatasetWriter, FeatureSpec, Provenance
    from cotrain.data.errors import DatasetError
    from cotrain.data.spec import IMAGE_KEY

    root = tmp_path / "real"
    with DatasetWriter(root, FeatureSpec(), use_video=False) as w:
        for s, a in zip(*episode(GRIPPER, FINGERS)):
            w.add_frame(np.zeros((128, 128, 3), np.uint8), s, a, instruction("red", "cube"))
        w.save_episode(Provenance("real", "teleop", 0))
    info = json.loads((root / "meta" / "info.json").read_text())
    del info["features"][IMAGE_KEY]  # a recording without the camera
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=f"^{root}/meta/info.json: feature '{IMAGE_KEY}' missing"):
        load_demos(str(root))


def test_palette_step_by_hand():
    # g = 1: c * r_real / r_twin, clipped to [0, 1]; alpha kept; a channel rendered black keeps its value.
    assert palette_step((0.4, 0.5, 0.2, 0.7), (0.6, 0.9, 0.3), (0.3, 0.3, 0.0)) == pytest.approx((0.8, 1.0, 0.2, 0.7))
    # The render r = c^0.5: from c = 0.25 (r 0.5) and c = 0.36 (r 0.6) the step measures g = 0.5 and lands on the c
    # that renders r_real = 0.8 exactly, c = 0.64 = 0.36 * (0.8 / 0.6)^2.
    new = palette_step((0.36, 0.36, 0.36, 1.0), (0.8, 0.8, 0.8), (0.6, 0.6, 0.6), previous=((0.25,) * 4, (0.5,) * 3))
    assert new == pytest.approx((0.64, 0.64, 0.64, 1.0))


def test_fit_palette_reaches_the_real_colour_of_a_power_law_render():
    """The twin renders c as 0.9 c^(1/2.2) (an sRGB-like render): three steps from the sim palette land within
    0.005 of the real colours; a colour brighter than the twin can render clips at 1 and keeps a residual."""
    masks = {"red": np.zeros((1, 12, 12), bool), "tray": np.zeros((1, 12, 12), bool)}
    masks["red"][0, :6, :6] = masks["tray"][0, 6:, :] = True
    real = np.zeros((1, 12, 12, 3), np.uint8)
    real[0, :6, :6], real[0, 6:, :] = (150, 60, 40), (240, 170, 140)
    palette = {"red": (0.9, 0.1, 0.1, 1.0), "tray": (0.3, 0.3, 0.35, 1.0), "blue": (0.1, 0.2, 0.9, 1.0)}

    def render(pal):
        rgb = np.zeros((1, 12, 12, 3))
        for name, m in masks.items():
            rgb[m] = 0.9 * np.asarray(pal[name][:3]) ** (1 / 2.2)
        return np.round(rgb * 255).astype(np.uint8)

    fits = {f.name: f for f in fit_palette(render, real, masks, palette, iterations=3)}
    assert set(fits) == {"red", "tray"}  # colours not seen are not estimated
    assert fits["red"].residual < 0.005 and fits["red"].error_before > 0.2
    assert fits["tray"].rgba[0] == 1.0 and fits["tray"].residual == pytest.approx(240 / 255 - 0.9, abs=0.005)
    assert fits["tray"].spread == 0.0 and fits["tray"].observed == pytest.approx((240 / 255, 170 / 255, 140 / 255))
