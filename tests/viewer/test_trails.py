"""The viewer draws a tracks file's 3D trails: a dot at each visible point's world position in the current frame
and the segments of its last frames, following the time slider; files without 3D positions are refused."""

from __future__ import annotations

import numpy as np
import pytest

from inference.tracking.format import write_tracks
from tests.viewer.conftest import FRAMES, viewer_args


def test_trails_follow_the_frames(viewer_output, tmp_path):
    from viewer.app import start

    rng = np.random.default_rng(0)
    n = 7
    world = np.cumsum(rng.normal(0, 0.05, (n, FRAMES, 3)), axis=1).astype(np.float32)
    occ = rng.random((n, FRAMES)) < 0.25
    q = np.zeros((n, 3))
    write_tracks(tmp_path / "red_ball.npz", {"query_points": q, "tracks": np.zeros((n, FRAMES, 2)), "occluded": occ,
                                             "tracks_world": world})
    server, v = start(viewer_args(viewer_output, "--tracks", str(tmp_path / "red_ball.npz"), "--trail", "2"), port=0)
    try:
        (t,) = v.trails
        for f in range(FRAMES):
            v.set_frame(f)
            vis = ~occ[:, f]
            if vis.any():
                assert t.points.visible
                np.testing.assert_array_equal(t.points.points, world[vis, f])  # dots where the points are
            else:
                assert not t.points.visible
            expected = [np.stack([world[i, g], world[i, g + 1]]) for g in range(max(0, f - 2), f) for i in range(n)
                        if not occ[i, g] and not occ[i, g + 1]]
            if expected:
                assert t.lines.visible
                np.testing.assert_array_equal(np.sort(t.lines.points.reshape(-1, 6), axis=0),
                                              np.sort(np.array(expected).reshape(-1, 6), axis=0))
            else:
                assert not t.lines.visible
    finally:
        v.close()
        server.stop()


def test_tracks_without_world_positions_are_refused(viewer_output, tmp_path):
    from utils.cli import UserError
    from viewer.app import start

    write_tracks(tmp_path / "flat.npz", {"query_points": np.zeros((2, 3)), "tracks": np.zeros((2, FRAMES, 2)),
                                         "occluded": np.zeros((2, FRAMES), bool)})
    with pytest.raises(UserError, match="no tracks_world"):
        start(viewer_args(viewer_output, "--tracks", str(tmp_path / "flat.npz")), port=0)
