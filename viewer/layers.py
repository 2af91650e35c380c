"""The viewer's 3D scene on the server: a point cloud per frame, a camera frustum per frame and the camera
trajectory (:class:`SceneLayers`). It keeps what it sent (the selected points, what is shown, each frustum's
state) so that playback sends only what changes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from viewer.scene import scene_center, scene_scale

FRUSTUM_COLOR = (140, 140, 140)
CURRENT_COLOR = (255, 120, 0)


class SceneLayers:
    """Points, frustums and trajectory of ``scene`` (:class:`viewer.scene.SceneData`) on ``server``, under the
    point controls of ``controls`` (:class:`viewer.controls.Controls`: budget, confidence, point size, colour
    mode, cameras, trajectory). ``point_size``: world size of a point (None: estimated from the depth)."""

    def __init__(self, server: Any, scene: Any, controls: Any, point_size: float | None) -> None:
        self.server, self.scene, self.controls = server, scene, controls
        self.selection: dict[str, np.ndarray] = {}  # frame -> indices of its shown points
        self.clouds: dict = {}
        self.frustums: dict = {}
        self.trajectory = None
        self._shown: dict[str, bool] = {}
        self._frustum_state: dict[str, tuple] = {}
        self.scale = scene_scale(scene)
        self.center = scene_center(scene)
        self.point_size = point_size if point_size is not None else self._estimate_point_size()

    def _estimate_point_size(self) -> float:
        """World size of a shown point: the footprint of one pixel at the median depth, times the subsampling."""
        for key in self.scene.keys:
            fp, cam = self.scene.points.get(key), self.scene.cameras.get(key)
            if fp is None or cam is None or not len(fp.xyz):
                continue
            dist = float(np.median(np.linalg.norm(fp.xyz[:5000] - cam.center, axis=1)))
            H, W = cam.hw
            shown = max(1, min(int(self.controls.gui_budget.value), fp.total))
            size = dist / float(cam.intrinsics[0, 0]) * np.sqrt(H * W / shown) * 1.2
            if np.isfinite(size) and size > 0:
                return size
        return 0.005 * self.scale

    def build(self, visible: Callable[[str], bool], queries: Sequence[Any]) -> None:
        """Point the initial camera at the scene, add the frustums and the trajectory, send the points."""
        from viser import transforms as vtf

        from viewer.scene import Camera

        scene = self.server.scene
        ok = [c for c in (self.scene.cameras.get(k) for k in self.scene.keys) if c is not None and c.ok]
        if ok:
            up = ok[0].rotation @ np.array([0.0, -1.0, 0.0])  # OpenCV: y down; world = first camera
            scene.set_up_direction(tuple(float(v) for v in up))
            c0: Camera = ok[0]
            back = c0.center - c0.rotation @ np.array([0.0, 0.0, 1.0]) * self.scale * 1.5 + up * self.scale * 0.6
            self.server.initial_camera.position = tuple(float(v) for v in back)
            self.server.initial_camera.look_at = tuple(float(v) for v in self.center)
            self.server.initial_camera.up = tuple(float(v) for v in up)
        for key in self.scene.keys:
            cam = self.scene.cameras.get(key)
            if cam is None or not cam.ok:
                continue
            wxyz = vtf.SO3.from_matrix(cam.rotation).wxyz
            self.frustums[key] = scene.add_camera_frustum(
                f"/cameras/{key}", fov=cam.fov_y, aspect=cam.aspect, scale=0.08 * self.scale,
                thickness=0.004 * self.scale, color=FRUSTUM_COLOR, wxyz=wxyz, position=cam.center, format="jpeg")
        if len(ok) > 1:
            centers = np.array([c.center for c in ok], dtype=np.float32)
            segs = np.stack([centers[:-1], centers[1:]], axis=1)
            self.trajectory = scene.add_line_segments("/trajectory", segs, colors=(255, 120, 0),
                                                      thickness=0.004 * self.scale)
        self.refresh_points(None, visible, queries)

    def point_colors(self, key: str, queries: Sequence[Any]) -> np.ndarray:
        """(N, 3) uint8 colours of the shown points of frame ``key`` under the colour mode and the ``queries``
        (:class:`viewer.query_list.Query`; the shown ones colour the points inside their masks)."""
        from inference.visualize import heatmap_rgb

        fp = self.scene.points[key]
        sel = self.selection[key]
        mode = self.controls.gui_color.value
        shown = [q for q in queries if q.visible and q.result is not None]
        if mode == "relevancy":
            fr = shown[-1].result.frames.get(key) if shown else None
            if fr is not None and fp.pix is not None:
                pix = fp.pix[sel]
                return heatmap_rgb(fr.heat[pix[:, 0], pix[:, 1]][None].astype(np.float32) / 255.0)[0]
            mode = "rgb"
        colors = np.array(fp.colors[mode][sel], dtype=np.uint8, copy=True)
        if fp.pix is None:
            return colors
        pix = fp.pix[sel]
        for q in shown:
            fr = q.result.frames.get(key)
            if fr is not None:
                colors[fr.mask[pix[:, 0], pix[:, 1]]] = q.color
        return colors

    def refresh_points(self, keys: Iterable[str] | None, visible: Callable[[str], bool],
                       queries: Sequence[Any]) -> None:
        """(Re)send the point clouds of ``keys`` (None: all) for the current budget and confidence;
        ``visible(key)``: whether a frame's points are shown."""
        c = self.controls
        size = self.point_size * float(c.gui_point_scale.value)
        for key in keys if keys is not None else self.scene.keys:
            fp = self.scene.points.get(key)
            if fp is None:
                continue
            sel = self.scene.points[key].select(int(c.gui_budget.value), float(c.gui_conf.value))
            self.selection[key] = sel
            shown = visible(key)
            self.clouds[key] = self.server.scene.add_point_cloud(
                f"/points/{key}", fp.xyz[sel], self.point_colors(key, queries), point_size=size,
                point_shape="rounded", point_shading="flat", visible=shown)
            self._shown[key] = shown

    def refresh_colors(self, keys: Iterable[str] | None, queries: Sequence[Any]) -> None:
        """Recolour the shown points of ``keys`` (None: all)."""
        for key in keys if keys is not None else self.scene.keys:
            if key in self.clouds:
                self.clouds[key].colors = self.point_colors(key, queries)

    def update_visibility(self, current: str, visible: Callable[[str], bool]) -> None:
        """Send the visibility and highlight changes (only what changed, so playback stays light); ``current``:
        the frame whose frustum is highlighted."""
        for key, h in self.clouds.items():
            want = visible(key)
            if self._shown.get(key) != want:
                h.visible = want
                self._shown[key] = want
        cams = bool(self.controls.gui_cameras.value)
        for key, f in self.frustums.items():
            color = CURRENT_COLOR if key == current else FRUSTUM_COLOR
            if self._frustum_state.get(key) != (cams, color):
                f.visible = cams
                f.color = color
                self._frustum_state[key] = (cams, color)
        if self.trajectory is not None:
            self.trajectory.visible = bool(self.controls.gui_traj.value)

    def show_picture(self, key: str, picture: np.ndarray | None) -> None:
        """Put ``picture`` on frame ``key``'s frustum and take it off every other one (None: off everywhere)."""
        for k, f in self.frustums.items():
            want = picture if k == key else None
            if want is not None or f.image is not None:
                f.image = want
