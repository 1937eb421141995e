"""Camera pose and field of view by matching the rendered scene to real frames.

The twin renders its scene (robot at the recorded state, table) once, at its own camera, as a labelled point cloud:
world xyz, segmentation id and luminance per pixel (`cotrain.calibration.twin_render`). A candidate camera
re-projects that cloud (nearest point wins per pixel) into a label image; the real frame taken at the same state
should then be uniform inside each label. The loss is one minus Roche's *correlation ratio*,

    loss = Σ_k n_k·Var(real | label k) / (N·Var(real)),

which does not care what colour the real robot, table or light has (the twin's colours are not calibrated yet),
only where the boundaries are. A coarse-to-fine coordinate search over (x, y, z, yaw, pitch, fov) around the
twin's current camera minimises it. The camera has no roll (a look-at camera with z up, as the twin's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cotrain.calibration.errors import CalibrationError

LUMINANCE = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class CameraPose:
    """A look-at camera without roll: eye position (m, world), yaw and pitch of the view direction, vertical fov."""

    eye: tuple[float, float, float]
    yaw: float
    """Azimuth of the view direction about world z (rad)."""
    pitch: float
    """Elevation of the view direction (rad; negative looks down)."""
    fov: float
    """Vertical field of view (rad)."""

    @classmethod
    def look_at(cls, eye: Sequence[float], target: Sequence[float], fov: float) -> "CameraPose":
        d = np.subtract(target, eye)
        return cls(tuple(float(e) for e in eye), math.atan2(d[1], d[0]), math.atan2(d[2], math.hypot(d[0], d[1])),
                   float(fov))

    @property
    def forward(self) -> np.ndarray:
        cp = math.cos(self.pitch)
        return np.array([cp * math.cos(self.yaw), cp * math.sin(self.yaw), math.sin(self.pitch)])

    def target(self, distance: float) -> np.ndarray:
        """The look-at point `distance` metres along the view direction."""
        return np.asarray(self.eye) + distance * self.forward

    def as_vector(self) -> np.ndarray:
        return np.array([*self.eye, self.yaw, self.pitch, self.fov])

    @classmethod
    def from_vector(cls, v: Sequence[float]) -> "CameraPose":
        return cls((float(v[0]), float(v[1]), float(v[2])), float(v[3]), float(v[4]), float(v[5]))


def angle_between(a: CameraPose, b: CameraPose) -> float:
    """Angle (rad) between two view directions."""
    return float(np.arccos(np.clip(a.forward @ b.forward, -1.0, 1.0)))


def project(points: np.ndarray, camera: CameraPose, height: int, width: int) -> tuple[np.ndarray, np.ndarray,
                                                                                          np.ndarray]:
    """(row, col, depth) of world points [P, 3] in the pinhole image (col = W/2 + f·right/depth, f from the fov)."""
    forward = camera.forward
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rel = points - np.asarray(camera.eye)
    depth = rel @ forward
    focal = (height / 2) / math.tan(camera.fov / 2)
    safe = np.where(depth > 1e-6, depth, np.inf)
    col = width / 2 + focal * (rel @ right) / safe
    row = height / 2 - focal * (rel @ up) / safe
    return row, col, depth


def splat_labels(points: np.ndarray, labels: np.ndarray, camera: CameraPose, height: int, width: int) -> np.ndarray:
    """Label image int [H, W] of the points seen from `camera`: the nearest point per pixel, −1 where none."""
    row, col, depth = project(points, camera, height, width)
    r, c = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    ok = (depth > 0) & (r >= 0) & (r < height) & (c >= 0) & (c < width)
    order = np.argsort(-depth[ok])  # far first: nearer points overwrite them
    out = np.full((height, width), -1, dtype=np.int64)
    out[r[ok][order], c[ok][order]] = labels[ok][order]
    return out


def correlation_ratio_loss(gray: np.ndarray, classes: np.ndarray) -> float:
    """Σ_k n_k·Var(gray | class k) / (N·Var(gray)) over all pixels (0: each class is uniform; 1: no information)."""
    g, k = gray.ravel().astype(np.float64), classes.ravel()
    _, inverse, counts = np.unique(k, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=g)
    sq = np.bincount(inverse, weights=g * g)
    within = float((sq - sums**2 / counts).sum())
    total = float(((g - g.mean()) ** 2).sum())
    return within / total if total > 0 else 1.0


@dataclass(frozen=True)
class LabelledCloud:
    """What the twin renders for one real frame: world points [P, 3] and their class [P] (segment × luminance)."""

    points: np.ndarray
    classes: np.ndarray


def labelled_cloud(points: np.ndarray, segments: np.ndarray, rgb: np.ndarray, bins: int = 3) -> LabelledCloud:
    """Classes = segmentation id × luminance tercile of the twin's render (splits a link's white and black parts)."""
    lum = rgb.reshape(-1, 3).astype(np.float64) @ LUMINANCE
    edges = np.quantile(lum, np.linspace(0, 1, bins + 1)[1:-1]) if len(lum) else []
    return LabelledCloud(points.reshape(-1, 3), segments.ravel().astype(np.int64) * bins + np.digitize(lum, edges))


def alignment_loss(camera: CameraPose, clouds: Sequence[LabelledCloud], grays: Sequence[np.ndarray]) -> float:
    """Mean correlation-ratio loss of the real frames' luminance against the clouds seen from `camera`."""
    h, w = grays[0].shape
    return float(np.mean([correlation_ratio_loss(g, splat_labels(c.points, c.classes, camera, h, w))
                          for c, g in zip(clouds, grays)]))


@dataclass(frozen=True)
class CameraEstimate:
    camera: CameraPose
    loss: float
    """The alignment loss at the estimate (the residual)."""
    initial_loss: float
    """The loss at the twin's camera before calibration."""
    evaluations: int


SEARCH_STEPS = (0.08, 0.08, 0.08, math.radians(8), math.radians(8), math.radians(8))
"""First step of each parameter (x, y, z in m; yaw, pitch, fov in rad); halved at each level."""


def estimate_camera(initial: CameraPose, clouds: Sequence[LabelledCloud], frames: Sequence[np.ndarray],
                    levels: int = 8, max_passes: int = 10, directions: int = 64, seed: int = 0) -> CameraEstimate:
    """Coarse-to-fine pattern search for the camera that best explains the real frames [H, W, 3] (uint8).

    Each pass tries ± every parameter axis and `directions` random directions (in units of each parameter's step:
    moves along a translation–rotation valley need both at once); the step halves when no move improves.
    """
    if len(frames) == 0 or len(frames) != len(clouds):
        raise CalibrationError(f"camera: need one twin render per real frame (> 0), got {len(clouds)} renders and "
                               f"{len(frames)} frames")
    grays = [np.asarray(f, dtype=np.float64) @ LUMINANCE for f in frames]
    rng = np.random.default_rng(seed)
    best = initial.as_vector()
    best_loss = initial_loss = alignment_loss(initial, clouds, grays)
    evaluations = 1
    for level in range(levels):
        steps = np.array(SEARCH_STEPS) / 2**level
        for _ in range(max_passes):
            moves = np.concatenate([np.eye(6), -np.eye(6), rng.normal(size=(directions, 6)) / math.sqrt(3)])
            losses = [alignment_loss(CameraPose.from_vector(best + m * steps), clouds, grays) for m in moves]
            evaluations += len(moves)
            i = int(np.argmin(losses))
            if losses[i] >= best_loss - 1e-9:
                break
            best, best_loss = best + moves[i] * steps, losses[i]
    return CameraEstimate(CameraPose.from_vector(best), best_loss, initial_loss, evaluations)
