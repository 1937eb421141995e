"""Greenscreen: a background estimated from frames of the empty real scene, composited behind what the twin renders.

As ManiSkill's `BaseDigitalTwinEnv`: wherever the twin's segmentation says none of the kept objects (robot, task
objects) is rendered, the output pixel is the background; elsewhere it is the render. The background is the
per-pixel median of the captured frames (robust to sensor noise and to a person passing by in a few frames).
"""

from __future__ import annotations

import numpy as np

from cotrain.calibration.errors import CalibrationError


def check_frames(frames: np.ndarray, height: int, width: int, what: str) -> np.ndarray:
    """`frames` as uint8 [N, height, width, 3], N ≥ 1, else one CalibrationError naming `what` and the shape."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if len(frames) == 0:
        raise CalibrationError(f"{what}: no frames")
    if frames.ndim != 4 or frames.shape[1:] != (height, width, 3):
        raise CalibrationError(f"{what}: frames must be [N, {height}, {width}, 3] (the camera's size), "
                               f"got {list(frames.shape)}")
    if frames.dtype != np.uint8:
        raise CalibrationError(f"{what}: frames must be uint8, got {frames.dtype}")
    return frames


def median_background(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """The per-pixel median of empty-scene frames [N, H, W, 3] (uint8 [H, W, 3])."""
    frames = check_frames(frames, height, width, "background")
    return np.median(frames, axis=0).round().astype(np.uint8)


def composite(render, keep, background):
    """render where `keep` [.., H, W] (robot / task objects rendered there), else the background [H, W, 3] (uint8;
    numpy arrays, or torch tensors on one device: what the env composites)."""
    if tuple(render.shape[-3:]) != tuple(background.shape) or tuple(keep.shape) != tuple(render.shape[:-1]):
        raise CalibrationError(f"composite: render {list(render.shape)}, mask {list(keep.shape)} and background "
                               f"{list(background.shape)} do not match")
    if isinstance(render, np.ndarray):
        return np.where(keep[..., None], render, background).astype(np.uint8)
    import torch

    return torch.where(keep[..., None], render, background).to(torch.uint8)
