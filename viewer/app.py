"""The viser viewer: ``python -m viewer --fields <out> [--host 127.0.0.1] [--port 8080]``.

Layout of the page (one viser server, any number of browser tabs share its state):

* 3D: the current frame's points (or every frame's, *all frames*), coloured by RGB, the PCA of a level's language
  field, or the relevancy of the last query; points inside a query's mask take that query's colour; a camera
  frustum per frame (the current one highlighted, with the panel's picture on it) and the camera trajectory.
* Time: frame slider, play / speed, and a timeline marking the frames where a time-sensitive query's state holds.
* Query: a text box; each query is kept (own colour, show / hide, remove); level and threshold apply to all.
* Image: the current frame's RGB, PCA picture or query overlay.
* Export: save what is shown as a ``.viser`` recording and a standalone ``.html`` (see :mod:`viewer.record`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import html
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.ground_truth import GROUND_TRUTH_LABEL, is_ground_truth
from utils.cli import UserError, add_device_arg, add_logging_args, cli_main, setup_logging_from
from viewer.record import check_port

log = logging.getLogger("viewer")

QUERY_COLORS = ((255, 0, 255), (0, 230, 255), (255, 140, 0), (140, 255, 0), (255, 255, 0), (0, 110, 255),
                (255, 0, 90), (0, 255, 150))
FRUSTUM_COLOR = (140, 140, 140)
CURRENT_COLOR = (255, 120, 0)
PANEL_WIDTH = 480  # pixels of the image panel's longer side sent to the browser


def import_viser():
    """The viser module, or the one-line error saying how to install it."""
    try:
        import viser
    except ImportError as e:
        raise UserError(f"the 'viser' package is not installed ({e})", "requirements.txt",
                        "pip install -r requirements.txt (it pins viser==1.1.1)") from None
    return viser


@dataclass
class Query:
    """A query kept in the viewer: its text, colour, whether it is shown and/or time-sensitive, its result."""

    text: str
    color: tuple[int, int, int]
    visible: bool = True
    state: bool = False
    result: object = None  # viewer.queries.QueryResult
    handles: list = field(default_factory=list)
    status: object = None


def timeline_html(n: int, current: int, rows: list[tuple[str, tuple[int, int, int], list[bool]]]) -> str:
    """A strip per time-sensitive query with the frames where its state holds filled in its colour, and the
    current frame marked."""
    def strip(cells: list[str]) -> str:
        return ('<div style="display:flex;height:10px;margin:1px 0;border:1px solid #8884">'
                + "".join(cells) + "</div>")

    cur = [f'<div style="flex:1;background:{"#ff7800" if i == current else "transparent"}"></div>' for i in range(n)]
    out = [f'<div style="font-size:11px">frame {current + 1} / {n}</div>', strip(cur)]
    for label, color, holds in rows:
        c = "#{:02x}{:02x}{:02x}".format(*color)
        cells = [f'<div style="flex:1;background:{c if h else "transparent"}"></div>' for h in holds]
        out.append(f'<div style="font-size:11px">{html.escape(label)}: state holds in '
                   f'{sum(holds)} / {len(holds)} frames</div>' + strip(cells))
    return "".join(out)


class Viewer:
    """The viewer's scene and GUI on a viser server; every control's callback is a method here.

    Args:
        server: a ``viser.ViserServer``.
        scene: :class:`viewer.scene.SceneData`; pictures: :class:`viewer.scene.FramePictures`.
        engine: :class:`viewer.queries.QueryEngine` (None: no query controls).
    """

    def __init__(self, server, scene, pictures, engine=None, budget: int = 20_000, conf_percentile: float = 25.0,
                 point_size: float | None = None, fps: float = 10.0, level: str = "auto",
                 threshold: float | None = None, record_dir: Path | None = None,
                 tracks: list[str] | None = None, trail: int = 10) -> None:
        from eval.query.masks import MASK_THRESHOLD
        from viewer.scene import scene_center, scene_scale

        self.server = server
        self.scene = scene
        self.pictures = pictures
        self.engine = engine
        self.record_dir = record_dir
        self.lock = threading.RLock()
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="viewer-query")
        self.queries: list[Query] = []
        self.frame = 0
        self.selection: dict[str, np.ndarray] = {}
        self.clouds: dict = {}
        self.frustums: dict = {}
        self._shown: dict[str, bool] = {}
        self._frustum_state: dict[str, tuple] = {}
        self.trajectory = None
        self._stop = threading.Event()
        self._last_panel_key = None
        self.scale = scene_scale(scene)
        self.center = scene_center(scene)
        max_points = max([len(p.conf) for p in scene.points.values()] + [1])
        budget = int(min(budget, max_points))
        self._auto_point_size = point_size is None
        self._build_gui(budget, conf_percentile, fps, level, MASK_THRESHOLD if threshold is None else threshold,
                        max_points)
        self.point_size = point_size if point_size is not None else self._estimate_point_size()
        self._build_scene()
        from viewer.trails import Trails

        self.trails = [Trails(server.scene, p, scene.n, QUERY_COLORS[(i + 4) % len(QUERY_COLORS)], trail,
                              point_size=3 * self.point_size) for i, p in enumerate(tracks or [])]
        self.set_frame(0)
        self._player = threading.Thread(target=self._play_loop, name="viewer-play", daemon=True)
        self._player.start()

    # ------------------------------------------------------------------ building
    def _build_gui(self, budget, conf_percentile, fps, level, threshold, max_points) -> None:
        gui = self.server.gui
        n = self.scene.n
        if is_ground_truth(self.scene.layout):
            # the geometry is the synthetic scene's truth (python -m inference.ground_truth), not a prediction
            self.gui_geometry_label = gui.add_markdown(f"**{GROUND_TRUTH_LABEL}**")
        with gui.add_folder("Time"):
            self.gui_frame = gui.add_slider("frame", min=0, max=max(n - 1, 1), step=1, initial_value=0,
                                            disabled=n < 2)
            self.gui_play = gui.add_checkbox("play", initial_value=False)
            self.gui_speed = gui.add_slider("speed (fps)", min=0.5, max=30.0, step=0.5, initial_value=float(fps))
            self.gui_fused = gui.add_checkbox("all frames (fused)", initial_value=False)
            self.gui_timeline = gui.add_html(timeline_html(n, 0, []))
        with gui.add_folder("Query"):
            self.gui_text = gui.add_text("text", initial_value="")
            self.gui_add = gui.add_button("add query", disabled=self.engine is None)
            self.gui_level = gui.add_dropdown("level", options=["auto", *self.scene.levels], initial_value=level)
            self.gui_threshold = gui.add_slider("threshold", min=0.0, max=0.99, step=0.01,
                                                initial_value=float(threshold))
            video_ok = self.engine is not None and self.scene.has_video
            self.gui_state = gui.add_checkbox("time-sensitive (state) query", initial_value=False,
                                              disabled=not video_ok,
                                              hint=None if video_ok else "the fields have no video head")
            self.gui_status = gui.add_markdown("" if self.engine is not None else
                                               "*no text encoder / autoencoder: queries are off*")
            self.gui_query_folder = gui.add_folder("queries")
        with gui.add_folder("Image"):
            self.gui_panel_mode = gui.add_dropdown("picture", options=[*self.scene.color_modes(), "query"],
                                                   initial_value="rgb")
            first = self.scene.keys[0]
            self.gui_image = gui.add_image(self._panel_picture(first), label=first, format="jpeg")
        with gui.add_folder("Points", expand_by_default=False):
            self.gui_color = gui.add_dropdown("colour", options=[*self.scene.color_modes(), "relevancy"],
                                              initial_value="rgb")
            self.gui_budget = gui.add_slider("points per frame", min=min(100, max_points), max=max_points,
                                             step=100 if max_points > 1000 else 1, initial_value=budget)
            self.gui_conf = gui.add_slider("confidence percentile", min=0.0, max=99.0, step=1.0,
                                           initial_value=float(conf_percentile))
            self.gui_point_scale = gui.add_slider("point size", min=0.1, max=5.0, step=0.1, initial_value=1.0)
            self.gui_cameras = gui.add_checkbox("cameras", initial_value=True)
            self.gui_traj = gui.add_checkbox("trajectory", initial_value=True)
            self.gui_frustum_image = gui.add_checkbox("picture on the current camera", initial_value=True)
        with gui.add_folder("Export", expand_by_default=False):
            self.gui_save = gui.add_button("save recording (.viser + .html)")
            self.gui_saved = gui.add_markdown("")

        self.gui_frame.on_update(lambda _: self.set_frame(int(self.gui_frame.value)))
        self.gui_fused.on_update(lambda _: self.update_visibility())
        self.gui_color.on_update(lambda _: self.refresh_colors())
        self.gui_budget.on_update(lambda _: self.refresh_points())
        self.gui_conf.on_update(lambda _: self.refresh_points())
        self.gui_point_scale.on_update(lambda _: self.refresh_points())
        self.gui_cameras.on_update(lambda _: self.update_visibility())
        self.gui_traj.on_update(lambda _: self.update_visibility())
        self.gui_frustum_image.on_update(lambda _: self.update_panel(force=True))
        self.gui_panel_mode.on_update(lambda _: self.update_panel(force=True))
        self.gui_add.on_click(lambda _: self.submit_query())
        self.gui_level.on_update(lambda _: self.rerun_queries())
        self.gui_threshold.on_update(lambda _: self.rerun_queries())
        self.gui_save.on_click(lambda _: self._save_from_gui())

    def _estimate_point_size(self) -> float:
        """World size of a shown point: the footprint of one pixel at the median depth, times the subsampling."""
        for key in self.scene.keys:
            fp, cam = self.scene.points.get(key), self.scene.cameras.get(key)
            if fp is None or cam is None or not len(fp.xyz):
                continue
            dist = float(np.median(np.linalg.norm(fp.xyz[:5000] - cam.center, axis=1)))
            H, W = cam.hw
            shown = max(1, min(int(self.gui_budget.value), fp.total))
            size = dist / float(cam.intrinsics[0, 0]) * np.sqrt(H * W / shown) * 1.2
            if np.isfinite(size) and size > 0:
                return size
        return 0.005 * self.scale

    def _build_scene(self) -> None:
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
        from viser import transforms as vtf

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
        self.refresh_points()

    # ------------------------------------------------------------------ points
    def _selected(self, key: str) -> np.ndarray:
        return self.scene.points[key].select(int(self.gui_budget.value), float(self.gui_conf.value))

    def point_colors(self, key: str) -> np.ndarray:
        """(N, 3) uint8 colours of the shown points of frame ``key`` under the current colour mode and queries."""
        from inference.visualize import heatmap_rgb

        fp = self.scene.points[key]
        sel = self.selection[key]
        mode = self.gui_color.value
        shown = [q for q in self.queries if q.visible and q.result is not None]
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

    def _visible_frame(self, key: str) -> bool:
        return bool(self.gui_fused.value) or key == self.scene.keys[self.frame]

    def refresh_points(self, keys=None) -> None:
        """(Re)send the point clouds of ``keys`` (default all) for the current budget and confidence."""
        with self.lock:
            size = self.point_size * float(self.gui_point_scale.value) if hasattr(self, "point_size") else 0.01
            for key in keys if keys is not None else self.scene.keys:
                fp = self.scene.points.get(key)
                if fp is None:
                    continue
                sel = self._selected(key)
                self.selection[key] = sel
                visible = self._visible_frame(key)
                self.clouds[key] = self.server.scene.add_point_cloud(
                    f"/points/{key}", fp.xyz[sel], self.point_colors(key), point_size=size,
                    point_shape="rounded", point_shading="flat", visible=visible)
                self._shown[key] = visible

    def refresh_colors(self, keys=None) -> None:
        """Recolour the shown points of ``keys`` (default all)."""
        with self.lock:
            for key in keys if keys is not None else self.scene.keys:
                if key in self.clouds:
                    self.clouds[key].colors = self.point_colors(key)
            if keys is None or self.scene.keys[self.frame] in keys:
                self.update_panel(force=True)

    # ------------------------------------------------------------------ time
    def set_frame(self, i: int) -> None:
        """Show frame ``i``: its points, highlighted frustum, picture and timeline mark."""
        with self.lock:
            i = int(np.clip(i, 0, self.scene.n - 1))
            if int(self.gui_frame.value) != i:
                self.gui_frame.value = i  # its callback comes back here with the slider already at i
                return
            self.frame = i
            for t in getattr(self, "trails", []):
                t.show(i)
            self.update_visibility()
            self.update_panel()
            self.update_timeline()

    def update_visibility(self) -> None:
        """Send the visibility and highlight changes (only what changed, so playback stays light)."""
        with self.lock:
            cur = self.scene.keys[self.frame]
            for key, h in self.clouds.items():
                want = self._visible_frame(key)
                if self._shown.get(key) != want:
                    h.visible = want
                    self._shown[key] = want
            cams = bool(self.gui_cameras.value)
            for key, f in self.frustums.items():
                color = CURRENT_COLOR if key == cur else FRUSTUM_COLOR
                if self._frustum_state.get(key) != (cams, color):
                    f.visible = cams
                    f.color = color
                    self._frustum_state[key] = (cams, color)
            if self.trajectory is not None:
                self.trajectory.visible = bool(self.gui_traj.value)

    def _play_loop(self) -> None:
        while not self._stop.is_set():
            speed = max(0.1, float(self.gui_speed.value))
            if self.gui_play.value and self.scene.n > 1:
                t = time.perf_counter()
                self.set_frame((self.frame + 1) % self.scene.n)
                self._stop.wait(max(0.0, 1.0 / speed - (time.perf_counter() - t)))
            else:
                self._stop.wait(0.05)

    # ------------------------------------------------------------------ pictures
    def _panel_picture(self, key: str) -> np.ndarray:
        from inference.visualize import overlay

        hw = self.scene.hw[key]
        mode = self.gui_panel_mode.value if hasattr(self, "gui_panel_mode") else "rgb"
        if mode != "query":
            img = self.pictures.picture(mode, key, hw)
        else:
            img = self.pictures.rgb(key, hw)
            shown = [q for q in self.queries if q.visible and q.result is not None and key in q.result.frames]
            for j, q in enumerate(shown):
                fr = q.result.frames[key]
                heat = fr.heat.astype(np.float32) / 255.0 if j == len(shown) - 1 else None
                img = overlay(img, heat, fr.mask, mask_color=q.color)
        H, W = img.shape[:2]
        s = PANEL_WIDTH / max(H, W)
        if s < 1:  # large frames: send a smaller picture
            import cv2

            img = cv2.resize(img, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA)
        elif s >= 2:  # small frames: blow up the pixels so the panel is readable
            img = np.repeat(np.repeat(img, int(s), axis=0), int(s), axis=1)
        return np.ascontiguousarray(img)

    def update_panel(self, force: bool = False) -> None:
        with self.lock:
            key = self.scene.keys[self.frame]
            if key == self._last_panel_key and not force:
                return
            img = self._panel_picture(key)
            self.gui_image.image = img
            self.gui_image.label = f"{key} ({self.gui_panel_mode.value})"
            for k, f in self.frustums.items():
                want = img if (k == key and self.gui_frustum_image.value) else None
                if want is not None or f.image is not None:
                    f.image = want
            self._last_panel_key = key

    def update_timeline(self) -> None:
        rows = []
        for q in self.queries:
            res = q.result
            if q.visible and q.state and res is not None and res.state_holds is not None:
                rows.append((q.text, q.color, [bool(res.state_holds.get(k, False)) for k in self.scene.keys]))
        self.gui_timeline.content = timeline_html(self.scene.n, self.frame, rows)

    # ------------------------------------------------------------------ queries
    def submit_query(self, text: str | None = None, state: bool | None = None, wait: bool = False):
        """The *add query* callback: the text box's query (or ``text``) over every frame, kept with its own colour.
        Runs on the query thread; returns its future (``wait`` blocks until every frame is done)."""
        text = (self.gui_text.value if text is None else text).strip()
        if not text or self.engine is None:
            return None
        existing = next((q for q in self.queries if q.text == text), None)
        if existing is not None:
            existing.visible = True
            fut = self.worker.submit(self._run_query, existing)
        else:
            q = Query(text, QUERY_COLORS[len(self.queries) % len(QUERY_COLORS)],
                      state=bool(self.gui_state.value if state is None else state))
            self.queries.append(q)
            self._add_query_gui(q)
            fut = self.worker.submit(self._run_query, q)
        if wait:
            fut.result()
        return fut

    def _add_query_gui(self, q: Query) -> None:
        gui = self.server.gui
        with self.gui_query_folder:
            show = gui.add_checkbox(q.text, initial_value=True)
            color = gui.add_rgb("colour", initial_value=q.color)
            status = gui.add_markdown("*computing…*")
            remove = gui.add_button("remove")
        q.handles = [show, color, status, remove]
        q.status = status

        def on_show(_):
            q.visible = bool(show.value)
            self.refresh_colors()
            self.update_timeline()

        def on_color(_):
            q.color = tuple(int(v) for v in color.value)
            self.refresh_colors()
            self.update_timeline()

        show.on_update(on_show)
        color.on_update(on_color)
        remove.on_click(lambda _: self.remove_query(q))

    def remove_query(self, q: Query) -> None:
        with self.lock:
            if q in self.queries:
                self.queries.remove(q)
            for h in q.handles:
                h.remove()
        self.refresh_colors()
        self.update_timeline()

    def _order(self) -> list[str]:
        """Frames in the order a query computes them: the one on screen first, then onwards (wrapping)."""
        keys = self.scene.keys
        return keys[self.frame:] + keys[: self.frame]

    def _run_query(self, q: Query) -> None:
        level, thr = self.gui_level.value, float(self.gui_threshold.value)

        def on_batch(res, batch):
            q.result = res
            if q in self.queries:
                self.refresh_colors([k for k in batch if k in self.clouds])
            if q.status is not None:
                q.status.content = f"{len(res.frames)}/{self.scene.n} frames, {res.seconds:.2f} s"

        try:
            res = self.engine.run(q.text, level=level, threshold=thr, order=self._order(), on_batch=on_batch,
                                  cancelled=lambda: q not in self.queries)
        except Exception as e:  # shown in the page, never kills the server
            log.exception("query %r failed", q.text)
            if q.status is not None:
                q.status.content = f"**failed:** {html.escape(str(e))}"
            return
        q.result = res
        extra = ""
        if q.state and q in self.queries:
            try:
                _, holds = self.engine.state(res)
                extra = f"; state holds in {sum(holds.values())}/{len(holds)} frames"
            except Exception as e:
                log.warning("time-sensitive score of %r failed: %s", q.text, e)
                extra = f"; time-sensitive score failed: {html.escape(str(e))}"
        levels = [self.scene.levels[fr.level] for fr in res.frames.values()]
        counts = ", ".join(f"{lvl} {levels.count(lvl)}" for lvl in self.scene.levels if levels.count(lvl))
        if q.status is not None:
            q.status.content = f"{len(res.frames)}/{self.scene.n} frames in {res.seconds:.2f} s ({counts}){extra}"
        self.update_timeline()

    def rerun_queries(self, wait: bool = False) -> None:
        """Recompute every kept query (after a level or threshold change)."""
        futs = [self.worker.submit(self._run_query, q) for q in list(self.queries)]
        if wait:
            for f in futs:
                f.result()

    def wait(self) -> None:
        """Block until every submitted query is done."""
        self.worker.submit(lambda: None).result()

    # ------------------------------------------------------------------ export
    def _save_from_gui(self) -> None:
        from viewer.record import save_recording

        folder = self.record_dir or (self.scene.layout.root / "viewer")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        paths = save_recording(self, [folder / f"recording-{stamp}.viser", folder / f"recording-{stamp}.html"])
        self.gui_saved.content = "saved: " + ", ".join(f"`{p}`" for p in paths)
        try:
            self.server.send_file_download(paths[-1].name, paths[-1].read_bytes())
        except Exception as e:  # a download is a convenience; the files are written
            log.warning("could not send the recording to the browser: %s", e)

    def close(self) -> None:
        self._stop.set()
        self.worker.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m viewer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fields", required=True, help="inference output folder (the --out of inference.run)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port); a port in use is an error")
    p.add_argument("--text", action="append", default=[], help="a query to run at start; repeat for several")
    p.add_argument("--state", action="append", default=[],
                   help="a time-sensitive (state) query to run at start (needs a video head); repeat for several")
    p.add_argument("--level", default="auto", choices=["auto", "small", "middle", "large"],
                   help="level of the masks: auto (highest smoothed relevancy, as eval.query) or a level")
    p.add_argument("--threshold", type=float, default=None, help="mask threshold on the [0,1] relevancy (0.4)")
    p.add_argument("--autoencoder", default=None,
                   help="autoencoder folder decoding the fields; default: the one the fields folder records; 'none' "
                        "when the fields are already CLIP-dimensional")
    p.add_argument("--video-autoencoder", default=None,
                   help="autoencoder of the time-sensitive (video) field; default: meta.json's video_autoencoder")
    p.add_argument("--exact", action="store_true", help="decode every pixel (eval.query --exact); default: grid")
    p.add_argument("--grid-size", type=int, default=None, help="latent grid points per axis (eval.query's default)")
    p.add_argument("--points", type=int, default=20_000, help="points shown per frame (a slider in the page)")
    p.add_argument("--max-points", type=int, default=None,
                   help="points kept in memory per frame (the slider's maximum; default 60000)")
    p.add_argument("--conf-percentile", type=float, default=25.0,
                   help="hide points below this percentile of each frame's depth confidence (a slider)")
    p.add_argument("--point-size", type=float, default=None, help="world size of a point (default: from the depth)")
    p.add_argument("--fps", type=float, default=10.0, help="playback speed (a slider)")
    p.add_argument("--cache-mb", type=float, default=1024.0, help="fields kept in memory for queries (MB)")
    p.add_argument("--record", default=None, metavar="PATH",
                   help="write what the viewer shows (every frame, the --text queries) to PATH and exit: a .viser "
                        "recording (viser's static client plays it) or, for a .html PATH, one standalone page")
    add_device_arg(p, "cpu", " of the text encoder and autoencoders")
    p.add_argument("--tracks", action="append", default=[],
                   help="a tracks npz with tracks_world (eval.query --track: <fields>/queries/tracks/<query>.npz, or "
                        "inference.track --geometry) drawn as 3D trails over time; repeat for several")
    p.add_argument("--trail", type=int, default=10, help="frames of trail behind each tracked point (default 10)")
    from eval.query.text import add_text_encoder_args

    add_text_encoder_args(p)
    add_logging_args(p)
    return p


def build_engine(args, scene):
    """The query engine the flags ask for (text encoder, autoencoders), or None when queries are impossible."""
    from eval.query.decode import autoencoder_decoder
    from eval.query.text import text_encoder_from_args
    from utils.device import resolve_device
    from viewer.queries import GRID_SIZE, QueryEngine

    layout = scene.layout
    device = resolve_device(args.device)
    ae = args.autoencoder if args.autoencoder is not None else layout.autoencoder()
    decode = autoencoder_decoder(ae, device=device) if ae and str(ae) != "none" else None
    vae = args.video_autoencoder
    if vae is None and layout.meta.exists():
        from utils.io import read_json

        rec = read_json(layout.meta).get("video_autoencoder")
        vae = (layout.root / rec if rec and not Path(rec).is_absolute() else rec) if rec else None
    video_decode = autoencoder_decoder(vae, device=device) if vae else None
    encode = text_encoder_from_args(args, device=str(device), decoders=[decode, video_decode])
    return QueryEngine(layout, scene.keys, encode, decode, levels=scene.levels, exact=args.exact,
                       grid_size=args.grid_size or GRID_SIZE, video_decode=video_decode, cache_mb=args.cache_mb)


def start(args, viser_module=None, port: int | None = None):
    """Load the output, start the server and build the viewer; returns (server, viewer)."""
    from inference.outputs import OutputLayout
    from viewer.scene import DEFAULT_MAX_POINTS, FramePictures, check_output, load_scene

    layout = OutputLayout(args.fields)
    check_output(layout)
    viser = viser_module or import_viser()
    port = args.port if port is None else port
    check_port(args.host, port)
    meta_levels = None
    if layout.meta.exists():
        from utils.io import read_json

        meta_levels = read_json(layout.meta).get("levels")
    from inference.outputs import LEVELS

    pictures = FramePictures(layout, tuple(meta_levels or LEVELS))
    t = time.perf_counter()
    scene = load_scene(layout, max_points=args.max_points or DEFAULT_MAX_POINTS, pictures=pictures,
                       progress=not args.quiet)
    log.info("loaded %d frames (%d with points) in %.1f s", scene.n, len(scene.points), time.perf_counter() - t)
    try:
        engine = build_engine(args, scene)
    except UserError as e:  # e.g. no open_clip weights offline: still show the geometry and fields
        if args.text or args.state:
            raise
        log.warning("text queries are off: %s", e)
        engine = None
    server = viser.ViserServer(host=args.host, port=port, verbose=not args.quiet)
    if port != 0 and server.get_port() != port:  # taken between the check and the start
        got = server.get_port()
        server.stop()
        raise UserError(f"port {port} was taken while starting (viser moved to {got})", f"{args.host}:{port}",
                        "pass another --port, or --port 0 for any free port")
    try:
        viewer = Viewer(server, scene, pictures, engine, budget=args.points, conf_percentile=args.conf_percentile,
                        point_size=args.point_size, fps=args.fps, level=args.level, threshold=args.threshold,
                        tracks=args.tracks, trail=args.trail)
        for text in args.text:
            viewer.submit_query(text, state=False)
        for text in args.state:
            viewer.submit_query(text, state=True)
    except BaseException:
        server.stop()
        raise
    return server, viewer


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    setup_logging_from(args)
    if args.record:
        args.host, port = "127.0.0.1", 0  # a recording needs no reachable server
    else:
        port = args.port
    server, viewer = start(args, port=port)
    try:
        if args.record:
            from viewer.record import save_recording

            viewer.wait()
            path = save_recording(viewer, [Path(args.record)])[0]
            print(f"recording written to {path} ({path.stat().st_size / 2**20:.1f} MB); "
                  f"{'open it in a browser' if path.suffix == '.html' else 'play it with: python -m viewer.record ' + str(path)}")
            return 0
        print(f"viewer: http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{server.get_port()} "
              f"({viewer.scene.n} frames; Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        viewer.close()
        server.stop()
