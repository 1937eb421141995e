"""Where the task objects were in a real pick_place demonstration, from its states, commands and task text only.

In a successful demo the object does not move before the grasp, so its initial position (frame 0) is where the
TCP is when the gripper closes on it: the command turns to close (< 0) and the fingers stop closing with a gap
left between them. The tray is where the TCP is when the gripper opens again (the command turns to open, > 0):
the step the fingers start to open, or the episode's last step when it ends before they do. The object's yaw is
the TCP's yaw at the grasp less the shape's grasp yaw (the fingers close across its narrow side). Its shape and
colour name come from the task text (`pick_place.parse_instruction`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cotrain.calibration.errors import CalibrationError
from cotrain.envs.pick_place import SHAPES, parse_instruction
from cotrain.envs.robot import ROBOT_BASE_XYZ

GRIPPER = 6
"""Index of the gripper command in an action (−1 close … +1 open)."""
FINGERS = slice(6, 8)
"""The two finger positions in a state (m); their sum is the gripper's opening."""
YAW = 5
"""The TCP's yaw in a state (rad)."""
SETTLED = 5e-4
"""The fingers have stopped closing when the opening changes by less than this (m) in one step."""
MIN_GAP = 0.003
"""An opening below this (m) once the fingers stop closing: they closed on nothing."""


@dataclass(frozen=True)
class DemoScene:
    episode: int
    """The episode's index in the dataset."""
    color: str
    """Palette name of the object's colour."""
    shape: str
    """SHAPES name of the object."""
    object_xy: tuple[float, float]
    """World xy of the object at frame 0 (the TCP at the grasp)."""
    object_yaw: float
    tray_xy: tuple[float, float]
    """World xy of the tray (the TCP at the release)."""
    grasp_step: int
    release_step: int


def find_scene(states: np.ndarray, actions: np.ndarray, task: str, where: str, episode: int = 0) -> DemoScene:
    """The scene of one episode (states [T, 8], commanded actions [T, 7], its task text); `where` names the episode
    in errors (e.g. "<dataset> episode 3")."""
    parsed = parse_instruction(task)
    if parsed is None:
        raise CalibrationError(f"{where}: task text {task!r} is not a pick_place instruction "
                               f"('put the <colour> <shape> in the tray')")
    color, shape = parsed
    closing = np.flatnonzero(actions[:, GRIPPER] < 0)
    if len(closing) == 0:
        raise CalibrationError(f"{where}: the gripper is never commanded to close (no grasp to locate the object)")
    close = int(closing[0])
    opening = states[:, FINGERS].sum(axis=1)
    steps = np.abs(np.diff(opening))
    grasp = next((t for t in range(close + 1, len(states) - 1)
                  if opening[t] < opening[close] - 2 * SETTLED and steps[t] < SETTLED), None)
    if grasp is None:
        raise CalibrationError(f"{where}: the fingers never close and stop after the close command at step {close}")
    if opening[grasp] < MIN_GAP:
        raise CalibrationError(f"{where}: the fingers closed on nothing at step {grasp} (opening "
                               f"{opening[grasp] * 1000:.1f} mm)")
    opens = np.flatnonzero(actions[grasp:, GRIPPER] > 0)
    if len(opens) == 0:
        raise CalibrationError(f"{where}: the gripper never opens after the grasp at step {grasp} (no release to "
                               f"locate the tray)")
    command = grasp + int(opens[0])
    release = next((t for t in range(command, len(states)) if opening[t] > opening[command] + 2 * SETTLED),
                   len(states) - 1)
    base = np.asarray(ROBOT_BASE_XYZ[:2])
    obj, tray = states[grasp, :2] + base, states[release, :2] + base  # the state is in the base frame
    yaw = float(states[grasp, YAW] - SHAPES[shape].grasp_yaw)
    return DemoScene(episode=episode, color=color, shape=shape, object_xy=(float(obj[0]), float(obj[1])),
                     object_yaw=yaw, tray_xy=(float(tray[0]), float(tray[1])), grasp_step=grasp,
                     release_step=release)


def demo_scenes(store, name: str) -> list[tuple[DemoScene, np.ndarray]]:
    """(scene, real frame 0 uint8 [H, W, 3]) of every episode of an `EpisodeStore`; `name` names the dataset."""
    out = []
    for e in np.unique(store.episode_index):
        rows = np.flatnonzero(store.episode_index == e)
        scene = find_scene(store.state[rows], store.action[rows], store.task[rows[0]], f"{name} episode {int(e)}",
                           int(e))
        out.append((scene, store.images[rows[0]]))
    return out
