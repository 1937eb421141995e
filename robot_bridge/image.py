"""The one image resize used by the camera node, the policy node and the recorder (so all see the same pixels)."""

from __future__ import annotations

import cv2
import numpy as np


def to_spec_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 HxWx3 RGB at (height, width): area interpolation when shrinking, linear when growing."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 HxWx3, got {image.dtype} {image.shape}")
    if image.shape[:2] == (height, width):
        return image
    shrink = image.shape[0] > height or image.shape[1] > width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
