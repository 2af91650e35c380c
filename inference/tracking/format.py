"""The point-track file format (TAP-Vid's, as the synthetic world's ``gt/tracks.npz`` writes it): one home.

A tracks file is an ``.npz`` (never pickled) with

* ``query_points`` (N, 3) float32 ``[t, y, x]``: the frame index (an integer value) and the pixel position of each
  query;
* ``tracks`` (N, T, 2) float32 ``[x, y]`` pixels;
* ``occluded`` (N, T) bool (True = not visible);
* optional ``confidence`` (N, T) float32 in [0, 1], ``tracks_world`` (N, T, 3) float32 (world coordinates of the
  geometry the tracks were lifted with), ``tracks_camera`` (N, T, 3), ``image_size`` (2,) int ``[H, W]``.

Pixel convention (the project's, as in the geometry's intrinsics and in TAP-Vid's raster): continuous pixel
coordinates, x along the columns, y along the rows, the centre of pixel (row i, column j) at (x, y) = (j + 0.5,
i + 0.5); a point lies inside a W x H frame when 0 <= x <= W and 0 <= y <= H. OpenCV's trackers put pixel centres
at integers, so the tracker shifts by 0.5 on the way in and out. Metrics compare positions by distance after a
linear rescale, so they do not depend on the convention as long as the ground truth and the prediction share it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from utils.cli import UserError
from utils.io import save_npz_atomic

#: keys every tracks file has
REQUIRED = ("query_points", "tracks", "occluded")
OPTIONAL = ("confidence", "tracks_world", "tracks_camera", "image_size")


class TracksFormatError(UserError, ValueError):
    """A tracks / queries file that is not in the format above."""


def _load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise TracksFormatError("tracks file not found", p, "check the path")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays (pickles) are refused by allow_pickle=False
        raise TracksFormatError(f"not a plain .npz ({e})", p, "write it with numpy.savez, no object arrays") from None
    except (OSError, EOFError) as e:
        raise TracksFormatError(f"not a readable .npz ({e})", p, "write it with numpy.savez") from None


def check_queries(q: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """``query_points`` as float64 (N, 3), or a :class:`TracksFormatError`."""
    q = np.asarray(q)
    if q.ndim != 2 or q.shape[1] != 3 or not np.issubdtype(q.dtype, np.number):
        raise TracksFormatError(f"query_points must be a numeric (N, 3) [t, y, x] array, not {q.dtype} {q.shape}",
                                path, "write query_points as float32 (N, 3)")
    if not np.isfinite(q).all():
        raise TracksFormatError("query_points holds NaN or infinite values", path, "give finite query points")
    return q.astype(np.float64)


def read_queries(path: str | os.PathLike) -> np.ndarray:
    """The ``query_points`` (N, 3) ``[t, y, x]`` of a TAP-Vid npz (float64)."""
    z = _load(path)
    if "query_points" not in z:
        raise TracksFormatError(f"no 'query_points' key (keys: {sorted(z)})", path,
                                "give a TAP-Vid npz with query_points (N, 3) [t, y, x]")
    return check_queries(z["query_points"], path)


def read_tracks(path: str | os.PathLike, queries: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every array of a tracks file, checked for the keys and shapes above. ``occluded`` comes back as bool.

    Also accepted: TAP-Vid's batched layout of one video (a leading axis of 1 on ``query_points``, ``tracks``,
    ``occluded`` and the other per-track arrays) and ``visible`` (N, T) instead of ``occluded``; a file without
    ``query_points`` (a prediction) takes ``queries`` when they are given."""
    z = _load(path)
    q0 = np.asarray(z.get("query_points", np.zeros((0, 3))))
    if q0.ndim == 3 and q0.shape[0] == 1:  # [1, N, 3]: one video of a batch
        for k in ("query_points", "tracks", "occluded", "visible", "confidence", "tracks_world", "tracks_camera"):
            if k in z and np.asarray(z[k]).ndim >= 2 and np.asarray(z[k]).shape[0] == 1:
                z[k] = np.asarray(z[k])[0]
    if "query_points" not in z and queries is not None:
        z["query_points"] = np.asarray(queries)
    if "occluded" not in z and "visible" in z:
        z["occluded"] = ~(np.asarray(z["visible"]).astype(bool))
    missing = [k for k in REQUIRED if k not in z]
    if missing:
        raise TracksFormatError(f"missing key(s) {missing} (keys: {sorted(z)})", path,
                                "a tracks file has query_points (N,3), tracks (N,T,2) and occluded (N,T)")
    q = check_queries(z["query_points"], path)
    tr, occ = np.asarray(z["tracks"]), np.asarray(z["occluded"])
    n = q.shape[0]
    if tr.ndim != 3 or tr.shape[0] != n or tr.shape[2] != 2:
        raise TracksFormatError(f"tracks must be (N={n}, T, 2) [x, y], not {tr.shape}", path, "fix the file")
    if occ.shape != tr.shape[:2]:
        raise TracksFormatError(f"occluded must be (N, T) = {tr.shape[:2]}, not {occ.shape}", path, "fix the file")
    out = dict(z)
    out["query_points"], out["tracks"], out["occluded"] = q, tr.astype(np.float64), occ.astype(bool)
    for key, last in (("confidence", None), ("tracks_world", 3), ("tracks_camera", 3)):
        if key in out:
            want = tr.shape[:2] + ((last,) if last else ())
            if out[key].shape != want:
                raise TracksFormatError(f"{key} must be {want}, not {out[key].shape}", path, "fix the file")
    if "image_size" in out:
        size = np.asarray(out["image_size"]).reshape(-1)
        if size.shape != (2,) or (size <= 0).any():
            raise TracksFormatError(f"image_size must be [H, W] > 0, not {out['image_size']}", path, "fix the file")
    return out


def write_tracks(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write a tracks file atomically (uncompressed npz, the same bytes for the same arrays). Floats are stored as float32, ``occluded`` as bool."""
    cast = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        if k == "occluded":
            v = v.astype(bool)
        elif k == "image_size":
            v = v.astype(np.int64)
        elif np.issubdtype(v.dtype, np.floating):
            v = v.astype(np.float32)
        cast[k] = np.array(v, order="C")  # (ascontiguousarray would turn a scalar into shape (1,))
    save_npz_atomic(cast, path)
