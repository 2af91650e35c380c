"""Exact analytic ray casting of the synthetic scene's primitives (numpy, float64, element-wise only).

Every solid is a *unit* primitive seen through an affine map: ``X_world = M @ [u, 1]`` with ``u`` in the unit
primitive's space. A ray ``o + s d`` (world) becomes ``A o + s A d`` in unit space with ``A = M^-1``; the ray
parameter ``s`` is the same in both spaces, so hit distances need no conversion. Rays are built with a camera-frame
direction of z = 1, so ``s`` *is* the camera z (the depth the geometry files store).

Unit primitives (all solid, seen from outside):

- ``sphere``: ``|u| <= 1`` (ellipsoids through the affine map); face 0;
- ``cylinder``: ``inner^2 <= u_x^2 + u_y^2 <= 1``, ``|u_z| <= 1`` (``inner`` = 0: a closed cylinder; > 0: a tube,
  e.g. a ring or a donut); faces 0 outer wall, 1 top cap (+z), 2 bottom cap (-z), 3 inner wall;
- ``box``: ``|u_x|, |u_y|, |u_z| <= 1``; faces 0..5 = -x, +x, -y, +y, -z, +z.

Only element-wise numpy arithmetic is used (no BLAS products over many rays), so the results do not depend on
the number of threads or the CPU's vector width: the same inputs give the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: rays must travel at least this far (in camera-z units) before a hit counts
S_MIN = 1e-9


@dataclass
class Hits:
    """Nearest hits of a bundle of N rays on one primitive.

    s: (N,) float64 ray parameter (camera z), ``inf`` where missed; face: (N,) int8 face id (-1 missed);
    unit: (N, 3) float64 hit point in the primitive's unit space; normal_unit: (N, 3) unit-space normal
    (not normalised; map with ``A^T``).
    """

    s: np.ndarray
    face: np.ndarray
    unit: np.ndarray
    normal_unit: np.ndarray


def affine_apply(A: np.ndarray, p: np.ndarray, translate: bool = True) -> np.ndarray:
    """``A[:3, :3] @ p + A[:3, 3]`` for (N, 3) points, element-wise (no BLAS; bit-identical on every machine)."""
    out = np.empty_like(p, dtype=np.float64)
    for i in range(3):
        v = A[i, 0] * p[:, 0] + A[i, 1] * p[:, 1] + A[i, 2] * p[:, 2]
        out[:, i] = v + A[i, 3] if translate else v
    return out


def _pick(s_best, face_best, s_new, face_new):
    better = s_new < s_best
    return np.where(better, s_new, s_best), np.where(better, face_new, face_best)


def _quadratic_roots(a, b, c):
    """Roots of ``a s^2 + 2 b s + c = 0`` as (near, far); NaN where there are none."""
    disc = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.sqrt(np.where(disc >= 0, disc, np.nan))
        return (-b - root) / a, (-b + root) / a


def intersect(kind: str, inner: float, o: np.ndarray, d: np.ndarray) -> Hits:
    """Nearest hits of rays ``o + s d`` (unit space, (N, 3) each) with the unit primitive ``kind``."""
    n = len(o)
    inf = np.full(n, np.inf)
    face = np.full(n, -1, dtype=np.int8)
    if kind == "sphere":
        near, _ = _quadratic_roots((d * d).sum(1), (o * d).sum(1), (o * o).sum(1) - 1.0)
        ok = np.isfinite(near) & (near > S_MIN)
        s = np.where(ok, near, inf)
        face = np.where(ok, 0, face).astype(np.int8)
    elif kind == "cylinder":
        s, face = inf, face
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
        near, _ = _quadratic_roots(a, b, o[:, 0] ** 2 + o[:, 1] ** 2 - 1.0)
        z = o[:, 2] + near * d[:, 2]
        ok = np.isfinite(near) & (near > S_MIN) & (np.abs(z) <= 1.0)
        s, face = _pick(s, face, np.where(ok, near, inf), 0)
        for cap_face, zc in ((1, 1.0), (2, -1.0)):
            with np.errstate(invalid="ignore", divide="ignore"):
                sc = (zc - o[:, 2]) / d[:, 2]
            r2 = (o[:, 0] + sc * d[:, 0]) ** 2 + (o[:, 1] + sc * d[:, 1]) ** 2
            ok = np.isfinite(sc) & (sc > S_MIN) & (r2 <= 1.0) & (r2 >= inner * inner)
            s, face = _pick(s, face, np.where(ok, sc, inf), cap_face)
        if inner > 0:
            _, far = _quadratic_roots(a, b, o[:, 0] ** 2 + o[:, 1] ** 2 - inner * inner)
            z = o[:, 2] + far * d[:, 2]
            ok = np.isfinite(far) & (far > S_MIN) & (np.abs(z) <= 1.0)
            s, face = _pick(s, face, np.where(ok, far, inf), 3)
        face = face.astype(np.int8)
    elif kind == "box":
        dd = np.where(np.abs(d) < 1e-15, 1e-15, d)
        t1, t2 = (-1.0 - o) / dd, (1.0 - o) / dd
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        axis = lo.argmax(1)
        s_near = lo.max(1)
        s_far = hi.min(1)
        ok = (s_near <= s_far) & (s_near > S_MIN)
        s = np.where(ok, s_near, inf)
        sign_pos = np.take_along_axis(dd, axis[:, None], 1)[:, 0] < 0  # entering through the + face
        face = np.where(ok, 2 * axis + sign_pos, -1).astype(np.int8)
    else:
        raise ValueError(f"unknown primitive kind {kind!r}")
    hit = np.isfinite(s)
    sf = np.where(hit, s, 0.0)
    unit = o + sf[:, None] * d
    return Hits(s=s, face=face, unit=unit, normal_unit=unit_normals(kind, inner, face, unit))


def unit_normals(kind: str, inner: float, face: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Outward unit-space normals (N, 3) of points ``unit`` on faces ``face`` (zeros where face = -1)."""
    nrm = np.zeros_like(unit)
    if kind == "sphere":
        nrm[face == 0] = unit[face == 0]
    elif kind == "cylinder":
        side = face == 0
        nrm[side, 0], nrm[side, 1] = unit[side, 0], unit[side, 1]
        nrm[face == 1, 2] = 1.0
        nrm[face == 2, 2] = -1.0
        ins = face == 3
        nrm[ins, 0], nrm[ins, 1] = -unit[ins, 0], -unit[ins, 1]
    elif kind == "box":
        for f in range(6):
            m = face == f
            nrm[m, f // 2] = 1.0 if f % 2 else -1.0
    return nrm


def world_normals(A: np.ndarray, normal_unit: np.ndarray) -> np.ndarray:
    """Unit-space normals -> unit-length world normals ``normalise(A[:3,:3]^T n)`` (N, 3)."""
    n = np.empty_like(normal_unit)
    for i in range(3):
        n[:, i] = A[0, i] * normal_unit[:, 0] + A[1, i] * normal_unit[:, 1] + A[2, i] * normal_unit[:, 2]
    length = np.sqrt((n * n).sum(1))
    return n / np.where(length > 0, length, 1.0)[:, None]
