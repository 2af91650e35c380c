"""The synthetic world's 3D ground truth checked against itself: cameras, depth, tracks, flow, moving masks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from inference.geometry import is_rotation, pixel_rays, unproject_depth
from preprocess.geometry_files import read_depth
from preprocess.make_synthetic import SyntheticConfig, generate_synthetic_scene
from preprocess.synthetic import MOVING_EPS, build_scene
from preprocess.synthetic.groundtruth import DEPTH_TOL, GRID_BACKGROUND, GRID_OFFSET, query_frames
from preprocess.synthetic.render import camera_rays, cast, pixel_centres

SMALL = SyntheticConfig(frames=10, width=80, height=60, objects=6, seed=11)
TRACK_KEYS = {"query_points", "tracks", "occluded", "tracks_world", "tracks_camera", "image_size"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return generate_synthetic_scene(tmp_path_factory.mktemp("syn3d") / "scene", SMALL, progress=False)


@pytest.fixture(scope="module")
def tracks(scene) -> dict[str, np.ndarray]:
    with np.load(scene / "gt" / "tracks.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _cameras(scene: Path) -> list[dict]:
    return json.loads((scene / "gt" / "geometry" / "cameras.json").read_text())["frames"]


def _depth(scene: Path, t: int) -> tuple[np.ndarray, np.ndarray]:
    d, meta = read_depth(scene / "gt" / "geometry" / "depth" / f"{t + 1:06d}.safetensors")
    assert meta["ground_truth"] is True and meta["frame_index"] == t
    return d["depth"].numpy(), d["valid"].numpy().astype(bool)


def _project(cam: dict, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    E, K = np.array(cam["extrinsics"]), np.array(cam["intrinsics"])
    c = xyz.astype(np.float64) @ E[:, :3].T + E[:, 3]
    return (c @ K.T)[:, :2] / c[:, 2:], c


def test_tracks_file_has_exactly_the_tap_vid_keys_shapes_and_dtypes(tracks):
    assert set(tracks) == TRACK_KEYS
    n, T = tracks["occluded"].shape
    assert T == SMALL.frames and n > 100
    assert tracks["query_points"].shape == (n, 3) and tracks["query_points"].dtype == np.float32
    assert tracks["tracks"].shape == (n, T, 2) and tracks["tracks"].dtype == np.float32
    assert tracks["occluded"].dtype == bool
    for k in ("tracks_world", "tracks_camera"):
        assert tracks[k].shape == (n, T, 3) and tracks[k].dtype == np.float32
    assert tracks["image_size"].tolist() == [SMALL.height, SMALL.width]
    assert np.issubdtype(tracks["image_size"].dtype, np.integer)
    # query points: pixel centres of the stated grid on the query frames, where the track is at its query point
    qp = tracks["query_points"]
    assert sorted(set(qp[:, 0].astype(int).tolist())) == query_frames(SMALL.frames)
    assert np.all(np.mod(qp[:, 1:] - 0.5 - GRID_OFFSET, 4) == 0)
    t = qp[:, 0].astype(int)
    at_query = tracks["tracks"][np.arange(n), t]
    assert np.abs(at_query - qp[:, [2, 1]]).max() < 1e-3
    assert not tracks["occluded"][np.arange(n), t].any()
    coarse = np.all(np.mod(qp[:, 1:] - 0.5 - GRID_OFFSET, GRID_BACKGROUND) == 0, axis=1)
    assert (~coarse).sum() > 0  # the finer grid on objects adds points


def test_projecting_a_tracks_3d_point_gives_its_2d_position(scene, tracks):
    cams = _cameras(scene)
    worst = 0.0
    for t, cam in enumerate(cams):
        uv, c = _project(cam, tracks["tracks_world"][:, t])
        worst = max(worst, float(np.abs(uv - tracks["tracks"][:, t]).max()))
        # camera points are the world points seen by the same camera (float32 storage: ~1e-7 m)
        assert np.abs(c - tracks["tracks_camera"][:, t]).max() < 1e-5
    assert worst <= 1e-3, worst  # measured 2e-5 px (float32 storage of the world points)


def test_depth_equals_camera_z_of_visible_tracks_and_occluded_is_the_depth_test(scene, tracks):
    n, T = tracks["occluded"].shape
    for t in range(T):
        depth, valid = _depth(scene, t)
        xy, z = tracks["tracks"][:, t].astype(np.float64), tracks["tracks_camera"][:, t, 2].astype(np.float64)
        col, row = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
        inside = (col >= 0) & (col < SMALL.width) & (row >= 0) & (row < SMALL.height) & (z > 0)
        d = np.where(inside, depth[np.clip(row, 0, SMALL.height - 1), np.clip(col, 0, SMALL.width - 1)], np.nan)
        agrees = inside & (np.abs(d - z) <= DEPTH_TOL * z)
        np.testing.assert_array_equal(~agrees, tracks["occluded"][:, t])
        vis = ~tracks["occluded"][:, t]
        assert vis.sum() > 0.3 * n
        # where a visible track sits at its pixel's centre, the depth there is exactly its z (float32)
        centred = vis & np.all(np.abs(xy - np.floor(xy) - 0.5) < 1e-4, axis=1)
        if centred.any():
            np.testing.assert_allclose(d[centred], z[centred], rtol=1e-6)
    assert tracks["occluded"].any()  # objects hide things and things leave the frame


def test_occlusion_agrees_with_exact_ray_casting(scene, tracks):
    """Ray-cast to each track's point: a point is really visible when nothing is hit before it."""
    s = build_scene(SMALL)
    agree = []
    for t in range(SMALL.frames):
        xy = tracks["tracks"][:, t].astype(np.float64)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < SMALL.width) & (xy[:, 1] >= 0) & (xy[:, 1] < SMALL.height)
        origin, dirs = camera_rays(s, t, xy[inside, 0], xy[inside, 1])
        hit = cast(s.solids(t), origin, dirs)
        z = tracks["tracks_camera"][inside, t, 2].astype(np.float64)
        really = np.abs(hit.s - z) <= 1e-4 * z
        agree.append(really == ~tracks["occluded"][inside, t])
    # measured 0.959 here (80x60: edges are a large share of the pixels); the rest sit on silhouettes and contacts,
    # where the pixel that contains a point sees a neighbouring surface
    assert np.concatenate(agree).mean() > 0.94


def test_flow_is_the_difference_of_consecutive_track_positions(scene, tracks):
    qp, xy, occ = tracks["query_points"], tracks["tracks"], tracks["occluded"]
    checked = 0
    for q in query_frames(SMALL.frames):
        if q + 1 >= SMALL.frames:
            continue
        m = load_file(str(scene / "gt" / "motion" / f"{q + 1:06d}.safetensors"))
        sel = np.flatnonzero(qp[:, 0] == q)
        row, col = (qp[sel, 1] - 0.5).astype(int), (qp[sel, 2] - 0.5).astype(int)
        both = ~occ[sel, q] & ~occ[sel, q + 1]
        np.testing.assert_allclose(m["flow"][row, col][both], (xy[sel, q + 1] - xy[sel, q])[both], atol=1e-3)
        np.testing.assert_array_equal(m["flow_occluded"][row, col].astype(bool), occ[sel, q + 1])
        sf = tracks["tracks_world"][sel, q + 1] - tracks["tracks_world"][sel, q]
        np.testing.assert_allclose(m["scene_flow"][row, col], sf, atol=1e-5)
        checked += int(both.sum())
    assert checked > 100
    assert not (SMALL.frames and (scene / "gt" / "motion" / f"{SMALL.frames:06d}.safetensors").exists())


def test_moving_masks_are_empty_on_the_cloth_and_not_on_moving_objects(scene):
    names = json.loads((scene / "gt" / "names.json").read_text())
    cloth_large = next(r["id"] for r in names["regions"] if r["level"] == "large" and r["object"] == names["objects"][0])
    moving_objects = 0
    for t in range(SMALL.frames - 1):
        m = load_file(str(scene / "gt" / "motion" / f"{t + 1:06d}.safetensors"))
        large = np.load(scene / "gt" / "labels" / f"{t + 1:06d}.npy", allow_pickle=False)[2]
        assert not m["moving"][large == cloth_large].any()
        speed = np.linalg.norm(m["scene_flow"], axis=-1)
        sure = np.abs(speed - MOVING_EPS) > 1e-8  # away from the threshold by more than float32 storage can blur
        np.testing.assert_array_equal(m["moving"].astype(bool)[sure], (speed > MOVING_EPS)[sure])
        moving_objects += int(m["moving"][large != cloth_large].any())
    assert moving_objects >= SMALL.frames - 2  # the objects keep moving (they only pause at turning points)


def test_cameras_are_consistent_in_every_format(scene):
    s = build_scene(SMALL)
    cams = _cameras(scene)
    doc = json.loads((scene / "gt" / "geometry" / "cameras.json").read_text())
    assert doc["ground_truth"] is True and "GROUND TRUTH" in doc["convention"]
    for t, cam in enumerate(cams):
        E, K = np.array(cam["extrinsics"]), np.array(cam["intrinsics"])
        assert is_rotation(E[:, :3], atol=1e-9)
        assert np.linalg.det(E[:, :3]) == pytest.approx(1.0, abs=1e-12)
        f = (SMALL.height / 2) / math.tan(math.radians(SMALL.fov) / 2)
        np.testing.assert_allclose(K, [[f, 0, SMALL.width / 2], [0, f, SMALL.height / 2], [0, 0, 1]])
        d, _ = read_depth(scene / "gt" / "geometry" / "depth" / f"{t + 1:06d}.safetensors")
        np.testing.assert_array_equal(d["extrinsics"].numpy(), E)
        hn = json.loads((scene / "gt" / "camera" / f"{t + 1:06d}.json").read_text())
        # HyperNeRF: orientation = world-to-camera rotation, position = camera centre
        np.testing.assert_allclose(np.array(hn["orientation"]), E[:, :3])
        np.testing.assert_allclose(-np.array(hn["orientation"]) @ np.array(hn["position"]), E[:, 3], atol=1e-12)
        assert hn["focal_length"] == pytest.approx(f) and hn["principal_point"] == [K[0, 2], K[1, 2]]
        assert hn["image_size"] == [SMALL.width, SMALL.height] and hn["skew"] == 0.0
        np.testing.assert_allclose(s.extrinsics(t), E)


def test_depth_unprojects_onto_the_table_and_normals_are_unit(scene):
    for t in (0, SMALL.frames - 1):
        d, _ = read_depth(scene / "gt" / "geometry" / "depth" / f"{t + 1:06d}.safetensors")
        depth, valid = d["depth"].numpy(), d["valid"].numpy().astype(bool)
        xyz = unproject_depth(depth, d["intrinsics"].numpy(), d["extrinsics"].numpy())
        large = np.load(scene / "gt" / "labels" / f"{t + 1:06d}.npy", allow_pickle=False)[2]
        cloth = valid & (large == large[valid].min())  # the cloth's region id is the lowest at every level
        assert cloth.mean() > 0.3
        assert np.abs(xyz[cloth][:, 2]).max() < 1e-5  # the table top is the plane z = 0 (float32 depth)
        nrm = load_file(str(scene / "gt" / "geometry" / "normals" / f"{t + 1:06d}.safetensors"))["normals"]
        np.testing.assert_allclose(np.linalg.norm(nrm[valid], axis=-1), 1.0, atol=1e-5)
        rays = pixel_rays(depth.shape, d["intrinsics"].numpy())
        assert ((nrm * rays).sum(-1)[valid] < 0).all()  # every visible surface faces the camera


def test_the_default_video_is_really_3d():
    """The camera travels > 10 % of the mean scene depth, and the table's depth varies across each image."""
    s = build_scene(SyntheticConfig())
    T = s.config.frames
    centres = np.array([s.camera_centre(t) for t in range(T)])
    travel = np.linalg.norm(centres[-1] - centres[0])
    u, v = pixel_centres(s.config.height, s.config.width)
    depths = []
    for t in (0, T // 2, T - 1):
        origin, dirs = camera_rays(s, t, u, v)
        hit = cast(s.solids(t), origin, dirs)
        assert np.isfinite(hit.s).all()  # the cloth fills the background
        depths.append(hit.s)
        table = hit.index == len(s.solids(t))
        assert hit.s[table].max() > 1.5 * hit.s[table].min()  # measured 3.6x: a slanted plane, not a backdrop
    mean_depth = float(np.mean(np.concatenate(depths)))
    assert travel > 0.1 * mean_depth, (travel, mean_depth)  # measured 0.6 m over ~1.0 m


def test_other_seed_gives_another_world_with_the_same_names(tmp_path, scene):
    other = generate_synthetic_scene(tmp_path / "other", SyntheticConfig(**{**SMALL.to_dict(), "seed": 12}),
                                     progress=False)
    a = json.loads((scene / "gt" / "names.json").read_text())
    b = json.loads((other / "gt" / "names.json").read_text())
    assert a["regions"] == b["regions"] and a["objects"] == b["objects"]
    assert (scene / "gt" / "tracks.npz").read_bytes() != (other / "gt" / "tracks.npz").read_bytes()
