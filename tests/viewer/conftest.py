"""Fixtures of the viewer tests: one small synthetic inference output (session), a viewer on it (per test)."""

from __future__ import annotations

import pytest
import viser  # noqa: F401  (a requirement: the viewer tests fail, not skip, without it)

from tests.viewer.synth import make_output

FRAMES, WIDTH, HEIGHT = 6, 64, 48
DEGENERATE = (4,)  # frame positions left with the random backbone's non-finite camera


@pytest.fixture(scope="session")
def viewer_output(tmp_path_factory):
    return make_output(tmp_path_factory.mktemp("viewer"), frames=FRAMES, width=WIDTH, height=HEIGHT,
                       degenerate=DEGENERATE)


def viewer_args(paths, *extra: str):
    from viewer.app import build_parser

    return build_parser().parse_args(["--fields", str(paths["out"]), "--hash-text", "--port", "0", "-q",
                                      "--video-autoencoder", str(paths["video_autoencoder"]), *extra])


@pytest.fixture
def viewer(viewer_output):
    """(server, Viewer) on 127.0.0.1, any free port; stopped after the test."""
    from viewer.app import start

    server, v = start(viewer_args(viewer_output), port=0)
    yield server, v
    v.close()
    server.stop()
