"""The track-head method: the query-frame-first reordering and the windows are bookkeeping only (a query at frame
t gives exactly the track of the same query at frame 0 of the reordered clip; one window equals one plain call of
the head on the reordered clip), and ``python -m inference.track --method trackhead`` runs on a token cache and
refuses a cache without the head's layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.track import main
from inference.tracking.head import reordered, track_from_frame, track_queries
from tests.inference.tracking.synth import moving_scene, write_frames
from tests.model.test_track_head import tiny_track_head

T, H, W, C = 6, 70, 84, 64
P = 5 + (H // 14) * (W // 14)
LAYERS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    head = tiny_track_head().eval()
    frames = [[torch.randn(P, C) for _ in LAYERS] for _ in range(T)]
    return head, frames


def test_order_puts_the_query_frame_first():
    assert reordered(3, 6) == [3, 0, 1, 2, 4, 5]
    assert reordered(0, 3) == [0, 1, 2]


@pytest.mark.parametrize("window", [3, 4, 16])
def test_query_at_t_equals_query_at_0_of_the_reordered_clip(setup, window):
    head, frames = setup
    t = 3
    rng = np.random.default_rng(0)
    xy = rng.uniform([2, 2], [W - 3, H - 3], (5, 2)).astype(np.float32)
    c1, v1, f1 = track_queries(head, lambda f: frames[f], LAYERS, T, xy, np.full(5, t), (H, W), 5, window)
    order = reordered(t, T)
    clip = [frames[f] for f in order]  # the same video, reordered on disk
    c2, v2, f2 = track_queries(head, lambda f: clip[f], LAYERS, T, xy, np.zeros(5, int), (H, W), 5, window)
    assert np.array_equal(c1[:, order], c2) and np.array_equal(v1[:, order], v2)
    assert np.array_equal(f1[:, order], f2)
    np.testing.assert_array_equal(c1[:, t], xy)  # the query frame keeps the query


def test_one_window_is_one_call_of_the_head_on_the_reordered_clip(setup):
    head, frames = setup
    order = reordered(2, T)
    q = torch.tensor([[10.0, 20.0], [40.5, 33.25]])
    coords, vis, conf = track_from_frame(head, lambda f: frames[f], LAYERS, order, q, (H, W), 5, window=T)
    tokens = [torch.stack([frames[f][k] for f in order])[None] for k in range(4)]
    with torch.no_grad():
        c, v, cf = head(tokens, (1, T, 3, H, W), 5, query_points=q[None], frames_chunk_size=1)
    assert np.array_equal(coords[1:], c[-1][0, 1:].double().numpy())
    assert np.array_equal(vis[1:], v[0, 1:].double().numpy()) and np.array_equal(conf[1:], cf[0, 1:].double().numpy())


@pytest.fixture(scope="module")
def token_scene(tmp_path_factory):
    from preprocess.extract_tokens import main as extract

    root = tmp_path_factory.mktemp("head")
    s = moving_scene(seed=2, t=4, h=56, w=84, size=14, n=6)
    write_frames(root / "frames", s["frames"])
    extract([str(root / "frames"), "--out", str(root / "tokens"), "--backbone", "tiny", "--target-width", "84",
             "--device", "cpu", "--no-progress", "-q"])
    extract([str(root / "frames"), "--out", str(root / "tokens_few"), "--backbone", "tiny", "--target-width", "84",
             "--device", "cpu", "--no-progress", "-q", "--layers", "1", "2", "3"])
    return root, s


def test_command_tracks_with_the_head_on_the_token_cache(token_scene, tmp_path):
    root, s = token_scene
    from inference.tracking.format import write_tracks

    write_tracks(tmp_path / "q.npz", {k: s[k] for k in ("query_points", "tracks", "occluded")})
    out = main([str(root / "frames"), "--queries", str(tmp_path / "q.npz"), "--out", str(tmp_path / "p.npz"),
                "--method", "trackhead", "--tokens", str(root / "tokens"), "--backbone", "tiny", "--window", "3",
                "-q"])
    n = len(s["query_points"])
    assert out["tracks"].shape == (n, 4, 2) and out["occluded"].shape == (n, 4)
    qf = np.round(s["query_points"][:, 0]).astype(int)
    np.testing.assert_allclose(out["tracks"][np.arange(n), qf], s["query_points"][:, [2, 1]], atol=1e-4)
    assert np.isfinite(out["tracks"]).all() and ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()


def test_command_computes_the_tokens_when_there_is_no_cache(token_scene, tmp_path):
    root, s = token_scene
    out = main([str(root / "frames"), "--grid", "2", "--out", str(tmp_path / "p.npz"), "--method", "trackhead",
                "--backbone", "tiny", "--target-width", "84", "--device", "cpu", "-q"])
    assert out["tracks"].shape == (4, 4, 2) and (tmp_path / "p.tokens" / "meta.json").is_file()
    # the same tokens as the cache extracted with the same settings: the same tracks
    again = main([str(root / "frames"), "--grid", "2", "--out", str(tmp_path / "p2.npz"), "--method", "trackhead",
                  "--backbone", "tiny", "--tokens", str(root / "tokens"), "-q"])
    assert np.array_equal(out["tracks"], again["tracks"])


def test_command_refuses_a_cache_without_the_head_layers(token_scene, tmp_path, capsys):
    root, _ = token_scene
    with pytest.raises(SystemExit) as e:
        main([str(root / "frames"), "--grid", "2", "--out", str(tmp_path / "p.npz"), "--method", "trackhead",
              "--tokens", str(root / "tokens_few"), "--backbone", "tiny", "-q"])
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and "holds layers [1, 2, 3] but the track head reads [0, 1, 2, 3]" in err[0]
    assert not (tmp_path / "p.npz").exists()
