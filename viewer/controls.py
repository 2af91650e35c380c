"""The viewer's control panel: every widget of the page (:class:`Controls`) and what each one calls on the viewer
(:meth:`Controls.connect`), and the HTML of the time-sensitive timeline (:func:`timeline_html`)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from inference.ground_truth import GROUND_TRUTH_LABEL, is_ground_truth


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


class Controls:
    """The widgets of the page on ``gui`` (a viser GUI API), as ``gui_<name>`` handles: the folders Time, Query,
    Image, Points and Export. ``first_picture``: the image panel's first picture; ``queries``: whether a query
    engine is there; ``video``: whether the fields have a video head."""

    def __init__(self, gui: Any, scene: Any, first_picture: np.ndarray, *, queries: bool, video: bool,
                 budget: int, conf_percentile: float, fps: float, level: str, threshold: float,
                 max_points: int) -> None:
        n = scene.n
        if is_ground_truth(scene.layout):
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
            self.gui_add = gui.add_button("add query", disabled=not queries)
            self.gui_level = gui.add_dropdown("level", options=["auto", *scene.levels], initial_value=level)
            self.gui_threshold = gui.add_slider("threshold", min=0.0, max=0.99, step=0.01,
                                                initial_value=float(threshold))
            video_ok = queries and video
            self.gui_state = gui.add_checkbox("time-sensitive (state) query", initial_value=False,
                                              disabled=not video_ok,
                                              hint=None if video_ok else "the fields have no video head")
            self.gui_status = gui.add_markdown("" if queries else
                                               "*no text encoder / autoencoder: queries are off*")
            self.gui_query_folder = gui.add_folder("queries")
        with gui.add_folder("Image"):
            self.gui_panel_mode = gui.add_dropdown("picture", options=[*scene.color_modes(), "query"],
                                                   initial_value="rgb")
            first = scene.keys[0]
            self.gui_image = gui.add_image(first_picture, label=first, format="jpeg")
        with gui.add_folder("Points", expand_by_default=False):
            self.gui_color = gui.add_dropdown("colour", options=[*scene.color_modes(), "relevancy"],
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

    def connect(self, viewer: Any) -> None:
        """What each widget does: a call on ``viewer`` (:class:`viewer.app.Viewer`)."""
        self.gui_frame.on_update(lambda _: viewer.set_frame(int(self.gui_frame.value)))
        self.gui_fused.on_update(lambda _: viewer.update_visibility())
        self.gui_color.on_update(lambda _: viewer.refresh_colors())
        self.gui_budget.on_update(lambda _: viewer.refresh_points())
        self.gui_conf.on_update(lambda _: viewer.refresh_points())
        self.gui_point_scale.on_update(lambda _: viewer.refresh_points())
        self.gui_cameras.on_update(lambda _: viewer.update_visibility())
        self.gui_traj.on_update(lambda _: viewer.update_visibility())
        self.gui_frustum_image.on_update(lambda _: viewer.update_panel(force=True))
        self.gui_panel_mode.on_update(lambda _: viewer.update_panel(force=True))
        self.gui_add.on_click(lambda _: viewer.submit_query())
        self.gui_level.on_update(lambda _: viewer.rerun_queries())
        self.gui_threshold.on_update(lambda _: viewer.rerun_queries())
        self.gui_save.on_click(lambda _: viewer.save_from_gui())
