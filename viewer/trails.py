"""3D trails of point tracks in the viewer (``python -m viewer --tracks <tracks.npz>``): each tracked point as a
dot at its world position in the current frame and a line through its positions over the last ``length`` frames
(visible positions only). The files are those of ``eval.query --track`` (``<queries>/tracks/<query>.npz``) or of
``python -m inference.track --geometry``: they need ``tracks_world`` (N, T, 3) and ``occluded`` (N, T)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.tracking.format import read_tracks
from utils.cli import UserError


class Trails:
    """One tracks file drawn in a viser scene under ``/tracks/<name>``."""

    def __init__(self, scene_api, path: str | Path, num_frames: int, color: tuple[int, int, int],
                 length: int = 10, point_size: float = 0.01) -> None:
        data = read_tracks(path)
        if "tracks_world" not in data:
            raise UserError("the tracks have no tracks_world (3D positions)", path,
                            "track with --geometry (inference.track) or on an output with geometry (eval.query --track)")
        if data["tracks"].shape[1] != num_frames:
            raise UserError(f"the tracks cover {data['tracks'].shape[1]} frames, the output {num_frames}", path,
                            "give the tracks of this output's video")
        self.name = Path(path).stem
        self.world = np.asarray(data["tracks_world"], np.float32)
        self.occluded = np.asarray(data["occluded"], bool)
        self.color, self.length, self.point_size = color, int(length), float(point_size)
        self.scene = scene_api
        self.points = None
        self.lines = None
        self.visible = True

    def segments(self, frame: int) -> np.ndarray:
        """(M, 2, 3) trail segments up to ``frame``: consecutive frames where the point is visible in both."""
        start = max(0, frame - self.length)
        segs = []
        for f in range(start, frame):
            ok = ~self.occluded[:, f] & ~self.occluded[:, f + 1]
            if ok.any():
                segs.append(np.stack([self.world[ok, f], self.world[ok, f + 1]], axis=1))
        return np.concatenate(segs) if segs else np.zeros((0, 2, 3), np.float32)

    def current(self, frame: int) -> np.ndarray:
        """(K, 3) world positions of the points visible in ``frame``."""
        return self.world[~self.occluded[:, frame], frame]

    def show(self, frame: int) -> None:
        """Draw the dots and trails of ``frame`` (replacing the previous frame's)."""
        pts = self.current(frame)
        self.points = self.scene.add_point_cloud(
            f"/tracks/{self.name}/points", points=pts if len(pts) else np.zeros((1, 3), np.float32),
            colors=np.tile(np.array(self.color, np.uint8), (max(len(pts), 1), 1)), point_size=self.point_size,
            precision="float32", visible=self.visible and len(pts) > 0)
        segs = self.segments(frame)
        self.lines = self.scene.add_line_segments(
            f"/tracks/{self.name}/trails", segs if len(segs) else np.zeros((1, 2, 3), np.float32),
            colors=self.color, thickness=2.0, thickness_units="screen", visible=self.visible and len(segs) > 0)
