"""The viewer in a real browser: headless Chromium loads the page from a server on 127.0.0.1 and the screenshot
shows the rendered scene (many colours and the viewer's orange camera / trajectory lines in the 3D area, which an
error page or an empty canvas lacks); the standalone .html recording renders too, opened as a file, no server.
A browser that cannot start FAILS this test with its reason (install: apt-get install -y chromium)."""

from __future__ import annotations

import pytest


def test_page_and_recording_render_in_chromium(viewer, tmp_path):
    from viewer.record import save_recording
    from viewer.screenshot import capture_scene, shoot_viewer

    server, v = viewer
    v.submit_query("red ball", wait=True)
    v.gui_panel_mode.value = "query"
    try:
        stats = shoot_viewer(v, server, tmp_path / "viewer.png")
    except ValueError as e:
        pytest.fail(str(e))
    except Exception as e:  # no browser, a browser that cannot start or write the screenshot
        pytest.fail(f"headless Chromium could not take the screenshot: {e}")
    assert stats["distinct_colors"] >= 200 and stats["orange_pixels"] >= 20

    page = save_recording(v, [tmp_path / "rec.html"])[0]
    try:
        capture_scene(page.as_uri(), tmp_path / "rec.png")
    except Exception as e:
        pytest.fail(f"the standalone recording did not render: {e}")
