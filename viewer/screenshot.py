"""A screenshot of the viewer in headless Chromium (the README picture, and the browser test).

``python -m viewer.screenshot --fields <out> --out docs/images/viewer.png [--text "red ball"] [viewer flags]``
starts the viewer in this process on a free port of 127.0.0.1, loads the page in headless Chromium (Debian package
``chromium``; WebGL through SwiftShader, no GPU needed), saves the screenshot and checks that it shows the scene:
the 3D area (left of the control panel) must hold many distinct colours and the viewer's orange current-camera /
trajectory lines, which only a rendered WebGL scene has (an error page or an empty canvas has neither).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from utils.cli import UserError, cli_main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WINDOW = (1400, 900)
PANEL_WIDTH = 340  # CSS pixels of viser's control panel on the right (excluded from the scene check)


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise UserError("no Chromium found (looked for " + ", ".join(BROWSERS) + ")", None,
                    "apt-get update && apt-get install -y chromium")


def capture(url: str, out: str | Path, size: tuple[int, int] = WINDOW, budget_ms: int = 8000,
            timeout: float = 90.0) -> Path:
    """Load ``url`` in headless Chromium, let it run ``budget_ms`` of page time, write the PNG; a browser that
    cannot start or write it raises RuntimeError with its last output."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    browser = find_browser()
    with tempfile.TemporaryDirectory(prefix="viewer-chromium-") as profile:
        cmd = [browser, "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
               "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
               f"--virtual-time-budget={int(budget_ms)}", f"--screenshot={out}", url]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{browser} did not finish in {timeout:.0f} s: {str(e.stderr or '')[-1500:]}") from None
        except OSError as e:
            raise RuntimeError(f"{browser} could not start: {e}") from None
    if r.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{browser} exited with {r.returncode} and wrote no screenshot: "
                           f"{(r.stderr or r.stdout)[-1500:]}")
    return out


def scene_stats(png: str | Path, panel_width: int = PANEL_WIDTH) -> dict:
    """What the 3D area of a screenshot holds: distinct colours, share of non-background pixels, orange pixels
    (the highlighted camera and trajectory, (255, 120, 0))."""
    from PIL import Image

    with Image.open(png) as im:
        img = np.asarray(im.convert("RGB"))
    h, w = img.shape[:2]
    area = img[int(0.2 * h):, : max(1, w - panel_width - 40)]  # below viser's notifications, left of the panel
    flat = area.reshape(-1, 3).astype(np.int32)
    distinct = len(np.unique(flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2]))
    background = np.median(flat, axis=0)
    non_bg = float((np.abs(flat - background).sum(axis=1) > 30).mean())
    orange = int(((np.abs(flat - np.array([255, 120, 0])) < 40).all(axis=1)).sum())
    return {"distinct_colors": distinct, "non_background": non_bg, "orange_pixels": orange, "size": (w, h)}


def check_scene(png: str | Path) -> dict:
    """:func:`scene_stats`, raising ValueError when the screenshot does not show a rendered scene."""
    s = scene_stats(png)
    problems = []
    if s["distinct_colors"] < 200:
        problems.append(f"only {s['distinct_colors']} distinct colours in the 3D area")
    if s["non_background"] < 0.02:
        problems.append(f"the 3D area is {100 * (1 - s['non_background']):.1f}% background")
    if s["orange_pixels"] < 20:
        problems.append("no highlighted camera / trajectory drawn")
    if problems:
        raise ValueError(f"the screenshot {png} does not show the scene: " + "; ".join(problems) + f" ({s})")
    return s


def capture_scene(url: str, out: str | Path, size: tuple[int, int] = WINDOW, budget_ms: int = 8000,
                  tries: int = 3) -> dict:
    """:func:`capture` then :func:`check_scene`. The scene reaches a new page over its websocket (or from the
    recording's embedded messages), so a screenshot can come before the last of it is drawn (seen on a loaded
    machine: the points drawn, the orange camera lines not yet): up to ``tries`` screenshots, each with twice the
    page time of the one before; the last one's problems are raised."""
    for attempt in range(max(tries, 1) - 1):
        capture(url, out, size=size, budget_ms=budget_ms * 2 ** attempt)
        try:
            return check_scene(out)
        except ValueError:
            continue
    capture(url, out, size=size, budget_ms=budget_ms * 2 ** (max(tries, 1) - 1))
    return check_scene(out)


def shoot_viewer(viewer, server, out: str | Path, size: tuple[int, int] = WINDOW, budget_ms: int = 8000) -> dict:
    """Screenshot a running viewer (its pending queries done first) and check it (:func:`capture_scene`)."""
    viewer.wait()
    return capture_scene(f"http://127.0.0.1:{server.get_port()}/", out, size=size, budget_ms=budget_ms)


@cli_main
def main(argv: list[str] | None = None) -> int:
    from viewer.app import build_parser, start

    parent = build_parser()
    p = argparse.ArgumentParser(prog="python -m viewer.screenshot", parents=[parent], conflict_handler="resolve",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/images/viewer.png", help="PNG to write")
    p.add_argument("--frame", type=int, default=None, help="frame to show (default: the middle one)")
    p.add_argument("--picture", default="query", help="image panel: rgb, pca <level> or query")
    p.add_argument("--fused", action="store_true", help="show every frame's points")
    p.add_argument("--width", type=int, default=WINDOW[0])
    p.add_argument("--height", type=int, default=WINDOW[1])
    args = p.parse_args(argv)
    args.host = "127.0.0.1"
    server, viewer = start(args, port=0)
    try:
        viewer.wait()
        viewer.set_frame(viewer.scene.n // 2 if args.frame is None else args.frame)
        if args.picture in viewer.gui_panel_mode.options:
            viewer.gui_panel_mode.value = args.picture
        viewer.gui_fused.value = bool(args.fused)
        time.sleep(0.5)
        try:
            stats = shoot_viewer(viewer, server, args.out, size=(args.width, args.height))
        except (RuntimeError, ValueError) as e:
            raise UserError(str(e), args.out, "install chromium (apt-get install -y chromium) and retry") from None
        print(f"screenshot written to {args.out}: {stats}")
    finally:
        viewer.close()
        server.stop()
    return 0


if __name__ == "__main__":
    main()
