"""Camera pose and field of view from the robot's silhouette: where the real frames change when the arm moves.

Data (what a real robot gives): frames of the empty scene with the arm at home (the background) and frames with the
arm at several recorded joint states (the calibration motion). In a real frame, the pixels that differ from the
background are those the moving links cover now or covered at home (`change_mask`). The twin, set to the same joint
states, gives the world points of those moving links at home and at the recorded state, and of the whole robot at
home (`twin_render.silhouette_points`). A candidate camera projects those points; at the right camera they fall on
the real change mask and cover it. Two residuals per frame, in pixels, both continuous in the camera parameters:

    r_in  = distance from each projected twin point to the real change mask (0 inside it),
    r_out = distance from each changed real pixel to the nearest projected twin point.

r_in skips the points whose pixel may not change: a moving link's point at home where the link at the state covers
the same pixel, and a point at the state where the robot at home covers it (a white link in front of a white link
looks like the background frame; which of the two is in front does not matter). Without that, those holes in the
real mask pulled the estimate 2.2° off.

`fit_camera` minimises their robust (soft-L1, scale 1 px) sum of squares, each set weighted by 1/√(its size) so each
frame and direction counts the same, over (x, y, z, yaw, pitch, fov) by Nelder-Mead from the twin's camera, restarted
from its result while that still helps (the nearest-point residual has kinks that stall finite-difference
Gauss-Newton steps). The real camera's lens distortion
is not modelled. Several arm poses at different depths separate the camera's distance from its fov and its position
from its direction. Only the silhouette is used: not the colours, light or textures, which the twin has not
calibrated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize, spatial

from cotrain.calibration.camera_pose import CameraPose, project
from cotrain.calibration.errors import CalibrationError

CHANGE_THRESHOLD = 12.0
"""Grey levels (max over R, G, B) by which a pixel must differ from the background to count
as changed; the sensor noise of a real camera is a few levels (no blur: it would grow the mask at strong edges)."""
MAX_PIXELS = 2500
"""Changed real pixels kept per frame (a fixed-seed subsample), for speed."""
MAX_POINTS = 8000
"""Twin points kept per view of the moving links at home and at the state (a fixed-seed subsample): dense enough that
the nearest one to a covered pixel is well under a pixel away. The robot-at-home points are all kept: the pixels
they cover must be covered without gaps, or the points hidden behind them count as misses."""
RESTARTS = 4
"""Nelder-Mead runs again from its result with a fresh simplex while that lowers the objective by more than
RESTART_GAIN, at most this many times: the objective is flat along the camera's distance-vs-fov valley, where one run
stops short (on the pick_place real-proxy: 1.46 cm / 1.54° after the first run, 1.07 cm / 0.70° after four)."""
RESTART_GAIN = 1e-3
EDGE_FADE = 3.0
"""A twin point's r_in counts fully inside the frame and fades to nothing this many pixels outside it (the twin's
render sees wider than the camera, so points leave and enter the frame as the camera moves)."""
PARAM_SCALE = (0.01, 0.01, 0.01, 0.01, 0.01, 0.01)
"""Typical size of a step in x, y, z (m), yaw, pitch, fov (rad): the optimiser's variable scaling."""


def change_mask(frame: np.ndarray, background: np.ndarray, threshold: float = CHANGE_THRESHOLD) -> np.ndarray:
    """Pixels [H, W] where the frame differs from the background (max over R, G, B > threshold), cleaned of specks (an opening by the 4-neighbour cross), gaps closed and holes filled (a link whose colour is close to the
    table's in places)."""
    mask = np.abs(frame.astype(np.float64) - background.astype(np.float64)).max(axis=-1) > threshold
    mask = ndimage.binary_closing(ndimage.binary_opening(mask))
    return ndimage.binary_fill_holes(mask)


@dataclass(frozen=True)
class SilhouetteView:
    """One calibration frame: the real change mask and the twin's points of the links that moved from home."""

    mask: np.ndarray
    """bool [H, W]: real pixels that differ from the background."""
    home: np.ndarray
    """[P, 3] world points of the links that moved, at home (twin render)."""
    moved: np.ndarray
    """[Q, 3] the same links' world points at the recorded joint state."""


@dataclass(frozen=True)
class SilhouetteFit:
    camera: CameraPose
    residual_px: float
    """Mean of r_in and r_out (pixels) at the estimate: the estimate's residual."""
    initial_residual_px: float
    """The same at the twin's camera before calibration."""
    evaluations: int


def _subsample(values: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(values) <= n:
        return values
    return values[np.random.default_rng(seed).choice(len(values), n, replace=False)]


def _cover(points: np.ndarray, camera: CameraPose, height: int, width: int) -> np.ndarray:
    """bool [H, W]: the pixels the projected points cover, gaps of one pixel closed."""
    row, col, depth = project(points, camera, height, width)
    ok = (depth > 1e-3) & (row >= 0) & (row < height) & (col >= 0) & (col < width)
    cover = np.zeros((height, width), bool)
    cover[row[ok].astype(int), col[ok].astype(int)] = True
    return ndimage.binary_closing(cover)


def _on(cover: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """bool [P]: which projected points (row, col) fall on a covered pixel."""
    height, width = cover.shape
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    return inside & cover[np.clip(row, 0, height - 1).astype(int), np.clip(col, 0, width - 1).astype(int)]


class _Residuals:
    """The residual vector of all views for a camera vector (x, y, z, yaw, pitch, fov)."""

    def __init__(self, views: Sequence[SilhouetteView], robot: np.ndarray):
        self.height, self.width = views[0].mask.shape
        self.robot = robot
        self.views = []
        for i, v in enumerate(views):
            outside = ndimage.distance_transform_edt(~v.mask)  # px to the nearest changed pixel (0 inside)
            rows, cols = np.nonzero(v.mask)
            pixels = _subsample(np.stack([rows + 0.5, cols + 0.5], 1), MAX_PIXELS, i)
            home, moved = (_subsample(pts, MAX_POINTS, 1000 * k + i) for k, pts in enumerate((v.home, v.moved)))
            self.views.append((outside, pixels, home, moved))

    def __call__(self, vec: np.ndarray) -> list[np.ndarray]:
        camera = CameraPose.from_vector(vec)
        h, w = self.height, self.width
        robot_cover = _cover(self.robot, camera, h, w)  # the same robot at home behind every view
        out = []
        for outside, pixels, home, moved in self.views:
            row, col, depth = project(np.concatenate([home, moved]), camera, h, w)
            ahead = depth > 1e-3
            row, col = np.where(ahead, row, -1e3), np.where(ahead, col, -1e3)
            # the distance map's index i is the pixel whose centre is at i + 0.5
            r_in = ndimage.map_coordinates(outside, [row - 0.5, col - 0.5], order=1, mode="nearest")
            beyond = np.maximum(np.maximum(-row, row - h), np.maximum(-col, col - w))
            r_in = r_in * np.clip(1.0 - beyond / EDGE_FADE, 0.0, 1.0)
            n = len(home)
            may_not_change = np.concatenate([_on(_cover(moved, camera, h, w), row[:n], col[:n]),
                                             _on(robot_cover, row[n:], col[n:])])
            r_out, _ = spatial.cKDTree(np.stack([row, col], 1)).query(pixels)
            out += [r_in[~may_not_change], r_out]
        return out

    def robust(self, vec: np.ndarray) -> np.ndarray:
        """√ρ(r) with the soft-L1 ρ(r) = 2(√(1 + r²) − 1) (≈ r below 1 px, ≈ √(2r) above), each set / √(its size)."""
        return np.concatenate([np.sqrt(2 * (np.sqrt(1 + r**2) - 1)) / math.sqrt(max(len(r), 1)) for r in self(vec)])

    def mean_px(self, vec: np.ndarray) -> float:
        return float(np.mean([r.mean() for r in self(vec) if len(r)]))


def fit_camera(initial: CameraPose, views: Sequence[SilhouetteView],
               robot: np.ndarray | None = None) -> SilhouetteFit:
    """The camera (pose and fov) under which the twin's moving-link points best match the real change masks.
    `robot`: [R, 3] every robot link's world points at home (what may hide the moved links or be covered by them);
    None: no point at a joint state is taken for hidden."""
    if len(views) == 0:
        raise CalibrationError("camera: no calibration frames (need frames with the arm away from home)")
    shapes = {v.mask.shape for v in views}
    if len(shapes) > 1:
        raise CalibrationError(f"camera: calibration frames of different sizes {sorted(shapes)}")
    for i, v in enumerate(views):
        if v.mask.sum() < 10:
            raise CalibrationError(f"camera: calibration frame {i} shows (almost) no change from the background; "
                                   f"is the arm in view and away from home?")
        if len(v.home) + len(v.moved) < 10:
            raise CalibrationError(f"camera: calibration frame {i}: the twin sees no moving link at its joint state")
    residuals = _Residuals(views, np.zeros((0, 3)) if robot is None else robot)
    x0, scale = initial.as_vector(), np.array(PARAM_SCALE)

    def objective(z: np.ndarray) -> float:
        return float((residuals.robust(x0 + z * scale) ** 2).sum())

    z, value, evaluations = np.zeros(6), objective(np.zeros(6)), 1
    for run in range(1 + RESTARTS):
        step = 2.0 if run == 0 else 1.0  # first moves: 2 cm, 1.1°, 1.1° of fov; a restart half that
        result = optimize.minimize(objective, z, method="Nelder-Mead",
                                   options=dict(initial_simplex=np.vstack([z, z + step * np.eye(6)]), xatol=0.05,
                                                fatol=1e-4, maxfev=1500))
        evaluations += int(result.nfev)
        if run > 0 and value - result.fun <= RESTART_GAIN:
            break  # a restart that barely helps only wanders along the valley: keep the previous result
        if result.fun < value:
            z, value = result.x, float(result.fun)
    best = x0 + z * scale
    return SilhouetteFit(CameraPose.from_vector(best), residuals.mean_px(best), residuals.mean_px(x0), evaluations)
