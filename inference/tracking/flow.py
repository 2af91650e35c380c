"""Dense optical flow with OpenCV's DIS (``cv2.DISOpticalFlow``), in the project's pixel convention: ``flow[y, x]``
is the displacement [dx, dy] (pixels) of the pixel at row y, column x from one frame to the next."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class DenseFlow:
    """One DIS instance (reused across frames); ``preset`` one of :data:`PRESETS`."""

    def __init__(self, preset: str = "medium") -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r} (use {', '.join(PRESETS)})")
        self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])

    def __call__(self, gray0: np.ndarray, gray1: np.ndarray) -> np.ndarray:
        """(H, W) uint8, (H, W) uint8 -> (H, W, 2) float32 forward flow from gray0 to gray1."""
        return self._dis.calc(np.ascontiguousarray(gray0), np.ascontiguousarray(gray1), None)


def video_flows(gray: np.ndarray, preset: str = "medium") -> Iterator[np.ndarray]:
    """Forward flow of every consecutive pair of a (T, H, W) uint8 video: T-1 arrays (H, W, 2)."""
    dis = DenseFlow(preset)
    for f in range(len(gray) - 1):
        yield dis(gray[f], gray[f + 1])
