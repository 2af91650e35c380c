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
import logging
import threading
import time
from pathlib import Path

import numpy as np

from utils.cli import UserError, add_device_arg, add_logging_args, cli_main, setup_logging_from
from viewer.controls import Controls, timeline_html
from viewer.layers import SceneLayers
from viewer.playback import Player
from viewer.query_list import QUERY_COLORS, Query, QueryList
from viewer.record import check_port

log = logging.getLogger("viewer")

PANEL_WIDTH = 480  # pixels of the image panel's longer side sent to the browser


def import_viser():
    """The viser module, or the one-line error saying how to install it."""
    try:
        import viser
    except ImportError as e:
        raise UserError(f"the 'viser' package is not installed ({e})", "requirements.txt",
                        "pip install -r requirements.txt (it pins viser==1.1.1)") from None
    return viser


class Viewer:
    """The viewer on a viser server: it holds the current frame and puts together its parts, the control panel
    (:class:`viewer.controls.Controls`, whose ``gui_<name>`` handles read as the viewer's), the 3D scene
    (:class:`viewer.layers.SceneLayers`: ``clouds``, ``frustums``, ``selection``, ``trajectory``), the kept queries
    (:class:`viewer.query_list.QueryList`, ``queries``), the image panel, playback
    (:class:`viewer.playback.Player`) and the track trails. Every control's callback is a method here.

    Args:
        server: a ``viser.ViserServer``.
        scene: :class:`viewer.scene.SceneData`; pictures: :class:`viewer.scene.FramePictures`.
        engine: :class:`viewer.queries.QueryEngine` (None: no query controls).
    """

    #: what the 3D scene part holds, read as the viewer's own attributes
    _LAYER_ATTRS = ("clouds", "frustums", "selection", "trajectory", "point_size", "scale", "center")

    def __init__(self, server, scene, pictures, engine=None, budget: int = 20_000, conf_percentile: float = 25.0,
                 point_size: float | None = None, fps: float = 10.0, level: str = "auto",
                 threshold: float | None = None, record_dir: Path | None = None,
                 tracks: list[str] | None = None, trail: int = 10) -> None:
        from eval.query.masks import MASK_THRESHOLD

        self.server = server
        self.scene = scene
        self.pictures = pictures
        self.engine = engine
        self.record_dir = record_dir
        self.lock = threading.RLock()
        self.queries: list[Query] = []
        self.query_list = QueryList(self, self.queries)
        self.frame = 0
        self._last_panel_key: str | None = None
        max_points = max([len(p.conf) for p in scene.points.values()] + [1])
        self.controls = Controls(server.gui, scene, self._panel_picture(scene.keys[0], "rgb"),
                                 queries=engine is not None, video=scene.has_video,
                                 budget=int(min(budget, max_points)), conf_percentile=conf_percentile, fps=fps,
                                 level=level, threshold=MASK_THRESHOLD if threshold is None else threshold,
                                 max_points=max_points)
        self.layers = SceneLayers(server, scene, self.controls, point_size)
        with self.lock:
            self.layers.build(self._visible_frame, self.queries)
        self.controls.connect(self)
        from viewer.trails import Trails

        self.trails = [Trails(server.scene, p, scene.n, QUERY_COLORS[(i + 4) % len(QUERY_COLORS)], trail,
                              point_size=3 * self.point_size) for i, p in enumerate(tracks or [])]
        self.set_frame(0)
        self.player = Player(self)

    def __getattr__(self, name: str):
        """``gui_<name>``: the control panel's widget; ``clouds``, ``frustums``, ...: the 3D scene's."""
        part = (self.__dict__.get("controls") if name.startswith("gui_") else
                self.__dict__.get("layers") if name in self._LAYER_ATTRS else None)
        if part is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(part, name)

    # ------------------------------------------------------------------ points
    def _visible_frame(self, key: str) -> bool:
        return bool(self.gui_fused.value) or key == self.scene.keys[self.frame]

    def point_colors(self, key: str) -> np.ndarray:
        """(N, 3) uint8 colours of the shown points of frame ``key`` under the current colour mode and queries."""
        return self.layers.point_colors(key, self.queries)

    def refresh_points(self, keys=None) -> None:
        """(Re)send the point clouds of ``keys`` (default all) for the current budget and confidence."""
        with self.lock:
            self.layers.refresh_points(keys, self._visible_frame, self.queries)

    def refresh_colors(self, keys=None) -> None:
        """Recolour the shown points of ``keys`` (default all), and the picture when it shows the current frame."""
        with self.lock:
            self.layers.refresh_colors(keys, self.queries)
            if keys is None or self.scene.keys[self.frame] in keys:
                self.update_panel(force=True)

    def update_visibility(self) -> None:
        """Send the visibility and highlight changes (only what changed, so playback stays light)."""
        with self.lock:
            self.layers.update_visibility(self.scene.keys[self.frame], self._visible_frame)

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

    def update_timeline(self) -> None:
        rows = []
        for q in self.queries:
            res = q.result
            if q.visible and q.state and res is not None and res.state_holds is not None:
                rows.append((q.text, q.color, [bool(res.state_holds.get(k, False)) for k in self.scene.keys]))
        self.gui_timeline.content = timeline_html(self.scene.n, self.frame, rows)

    # ------------------------------------------------------------------ pictures
    def _panel_picture(self, key: str, mode: str) -> np.ndarray:
        """The image panel's picture of frame ``key`` in ``mode`` (a colour mode, or ``query``: the shown queries'
        overlays), at most PANEL_WIDTH pixels on its longer side, small frames blown up."""
        from inference.visualize import overlay

        hw = self.scene.hw[key]
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
            img = self._panel_picture(key, self.gui_panel_mode.value)
            self.gui_image.image = img
            self.gui_image.label = f"{key} ({self.gui_panel_mode.value})"
            self.layers.show_picture(key, img if self.gui_frustum_image.value else None)
            self._last_panel_key = key

    # ------------------------------------------------------------------ queries
    def submit_query(self, text: str | None = None, state: bool | None = None, wait: bool = False):
        """The *add query* callback: the text box's query (or ``text``) over every frame, kept with its own colour.
        Runs on the query thread; returns its future (``wait`` blocks until every frame is done)."""
        text = (self.gui_text.value if text is None else text).strip()
        if not text or self.engine is None:
            return None
        return self.query_list.submit(text, bool(self.gui_state.value if state is None else state), wait)

    def remove_query(self, q: Query) -> None:
        self.query_list.remove(q)
        self.refresh_colors()
        self.update_timeline()

    def rerun_queries(self, wait: bool = False) -> None:
        """Recompute every kept query (after a level or threshold change)."""
        self.query_list.rerun(wait)

    def wait(self) -> None:
        """Block until every submitted query is done."""
        self.query_list.wait()

    # ------------------------------------------------------------------ export
    def save_from_gui(self) -> None:
        """The *save recording* button: ``<record_dir or fields/viewer>/recording-<time>.viser`` and ``.html``,
        the page sent to the browser as a download."""
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
        self.player.stop()
        self.query_list.close()


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
