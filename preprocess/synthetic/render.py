"""Ray-cast renderer of a :class:`~preprocess.synthetic.scene.Scene`: colours, labels, depth, normals, hit records.

One ray per pixel centre (``(col + 0.5, row + 0.5)``, the project's pixel convention) from the camera centre; the
nearest hit over the table plane and every solid (:mod:`preprocess.synthetic.raycast`) gives the pixel's depth
(camera z), normal, world point, label and colour, so visibility is exact (no painter's order). Shading: Lambert
plus a Blinn highlight under one fixed light, soft contact shadows on the cloth; the glass wall is see-through
in colour only (geometry and labels treat it as the surface it is). Each hit also records *which* solid it is on
and where in that solid's unit space, so the same material point can be followed to any other frame
(:func:`world_points`), which is how tracks, optical flow and scene flow are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .raycast import affine_apply, intersect, world_normals
from .scene import LEVELS, TABLECLOTH, Scene, SceneObject, Solid

_LIGHT = np.array([-0.35, -0.45, 0.82]) / math.sqrt(0.35**2 + 0.45**2 + 0.82**2)
#: rays per batch in :func:`cast` (bounds memory on big frames)
CHUNK = 1 << 16
#: the table's index in a hit record (solids are 0..n-1)
NO_HIT = -1


@dataclass
class RenderedFrame:
    """One rendered frame (H, W = the config's height and width).

    rgb: uint8 (H, W, 3). labels: int32 (3, H, W) region ids for small/middle/large, -1 = none.
    depth: float32 (H, W) camera z in metres (0 where nothing is hit); valid: bool (H, W).
    normals: float32 (H, W, 3) unit normals in the camera frame (OpenCV), zeros where invalid.
    solid: int32 (H, W) index of the hit solid in ``Scene.solids(t)``, ``n_solids`` for the table, -1 none.
    unit: float64 (H, W, 3) the hit point in that solid's unit space (the world point for the table).
    world: float64 (H, W, 3) the hit point in the world.
    """

    rgb: np.ndarray
    labels: np.ndarray
    depth: np.ndarray
    valid: np.ndarray
    normals: np.ndarray
    solid: np.ndarray
    unit: np.ndarray
    world: np.ndarray


def affine_inverse(M: np.ndarray) -> np.ndarray:
    """Inverse (4, 4) of an affine (4, 4) matrix via the 3x3 adjugate (element-wise, the same bits everywhere)."""
    L, t = M[:3, :3], M[:3, 3]
    adj = np.array([[L[1, 1] * L[2, 2] - L[1, 2] * L[2, 1], L[0, 2] * L[2, 1] - L[0, 1] * L[2, 2],
                     L[0, 1] * L[1, 2] - L[0, 2] * L[1, 1]],
                    [L[1, 2] * L[2, 0] - L[1, 0] * L[2, 2], L[0, 0] * L[2, 2] - L[0, 2] * L[2, 0],
                     L[0, 2] * L[1, 0] - L[0, 0] * L[1, 2]],
                    [L[1, 0] * L[2, 1] - L[1, 1] * L[2, 0], L[0, 1] * L[2, 0] - L[0, 0] * L[2, 1],
                     L[0, 0] * L[1, 1] - L[0, 1] * L[1, 0]]])
    det = L[0, 0] * adj[0, 0] + L[0, 1] * adj[1, 0] + L[0, 2] * adj[2, 0]
    Li = adj / det
    out = np.eye(4)
    out[:3, :3] = Li
    out[:3, 3] = -(Li[:, 0] * t[0] + Li[:, 1] * t[1] + Li[:, 2] * t[2])
    return out


def camera_rays(scene: Scene, t: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays through continuous pixel coordinates (u = x, v = y; (N,) each) at frame t.

    Returns (origin (3,), directions (N, 3)) in the world, scaled so the camera-frame z of each direction is 1:
    the ray parameter of a hit is then its camera z.
    """
    K = scene.intrinsics
    extr = scene.extrinsics(t)
    R = extr[:, :3]
    xc = (u - K[0, 2]) / K[0, 0]
    yc = (v - K[1, 2]) / K[1, 1]
    dirs = np.stack([R[0, i] * xc + R[1, i] * yc + R[2, i] for i in range(3)], axis=1)
    return scene.camera_centre(t), dirs


def pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of every pixel centre in row-major order: ``u = col + 0.5``, ``v = row + 0.5``."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64) + 0.5, np.arange(width, dtype=np.float64) + 0.5,
                       indexing="ij")
    return u.reshape(-1), v.reshape(-1)


def project(scene: Scene, t: int, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> (pixel coordinates (N, 2) ``[x, y]``, camera-frame points (N, 3)) at frame t."""
    extr = scene.extrinsics(t)
    cam = affine_apply(np.vstack([extr, [0, 0, 0, 1]]), xyz)
    K = scene.intrinsics
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2]], axis=1)
    return uv, cam


@dataclass
class Cast:
    """Nearest hits of N rays: s (N,) camera z (inf = none); index (N,) solid index, n for the table, -1 none;
    face (N,) int8; unit (N, 3); normal (N, 3) world unit normals."""

    s: np.ndarray
    index: np.ndarray
    face: np.ndarray
    unit: np.ndarray
    normal: np.ndarray


def cast(solids: list[tuple[SceneObject, Solid, np.ndarray]], origin: np.ndarray, dirs: np.ndarray,
         skip: np.ndarray | None = None) -> Cast:
    """Nearest hit of each ray on the table plane (z = 0) or a solid; ``skip`` (N,) = a solid index to ignore per
    ray (-2: none)."""
    n = len(dirs)
    out = Cast(np.full(n, np.inf), np.full(n, NO_HIT, np.int32), np.full(n, -1, np.int8), np.zeros((n, 3)),
               np.zeros((n, 3)))
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        d = dirs[lo:hi]
        s = np.full(hi - lo, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            st = -origin[2] / d[:, 2]
        table = (d[:, 2] < 0) & np.isfinite(st) & (st > 0)
        s = np.where(table, st, s)
        index = np.where(table, len(solids), NO_HIT).astype(np.int32)
        face = np.where(table, 0, -1).astype(np.int8)
        unit = origin[None] + np.where(table, st, 0.0)[:, None] * d
        normal = np.zeros_like(unit)
        normal[table, 2] = 1.0
        for i, (_, solid, M) in enumerate(solids):
            A = affine_inverse(M)
            o = affine_apply(A, origin[None])[0]
            h = intersect(solid.kind, solid.inner, np.broadcast_to(o, d.shape), affine_apply(A, d, False))
            better = h.s < s
            if skip is not None:
                better &= skip[lo:hi] != i
            if not better.any():
                continue
            s = np.where(better, h.s, s)
            index[better] = i
            face[better] = h.face[better]
            unit[better] = h.unit[better]
            normal[better] = world_normals(A, h.normal_unit[better])
        out.s[lo:hi], out.index[lo:hi], out.face[lo:hi], out.unit[lo:hi], out.normal[lo:hi] = (
            s, index, face, unit, normal)
    return out


def world_points(solids: list[tuple[SceneObject, Solid, np.ndarray]], index: np.ndarray, unit: np.ndarray,
                 ) -> np.ndarray:
    """World positions (N, 3) of material points given by (solid index, unit-space point) under ``solids`` (the
    solids of any frame): ``M_index @ unit``; the table's points (index = len(solids)) are their own world points;
    NaN where index = -1."""
    out = np.full(unit.shape, np.nan)
    table = index == len(solids)
    out[table] = unit[table]
    for i, (_, _, M) in enumerate(solids):
        m = index == i
        if m.any():
            out[m] = affine_apply(M, unit[m])
    return out


# ----------------------------------------------------------------------------------------------- materials


def cloth_colour(scene: Scene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Albedo (N, 3) of the checkered (gingham) tablecloth at world (x, y) metres: 5 cm squares turned by the
    scene's cloth angle, a fine weave and smooth stains."""
    c, s = math.cos(scene.cloth_angle), math.sin(scene.cloth_angle)
    u, v = c * x + s * y, -s * x + c * y
    square = 0.05
    checker = np.mod(np.floor(u / square) + np.floor(v / square), 2.0)
    light, dark = np.array([238, 232, 214.0]), np.array([150, 95, 70.0])
    mix = 0.85 * checker
    tex = light[None] * (1 - mix[:, None]) + dark[None] * mix[:, None]
    p = scene.cloth_phase
    weave = 1.0 + 0.05 * np.sin(2 * np.pi * u / 0.012) * np.sin(2 * np.pi * v / 0.012)
    stain = (np.sin(11 * u + p[0]) * np.sin(9 * v + p[1]) + 0.5 * np.sin(23 * u + 7 * v + p[2])
             + 0.4 * np.sin(31 * v - 13 * u + p[3])) / 1.9
    return tex * (weave * (1.0 + 0.07 * stain))[:, None]


def surface(scene: Scene, obj: SceneObject, solid: Solid, face: np.ndarray, unit: np.ndarray,
            ) -> tuple[np.ndarray, np.ndarray]:
    """(part index (N,), albedo (N, 3)) of hits on ``solid`` of ``obj``: the solid's part and colour unless its
    texture rule splits it (box faces, the glass's juice level, the mug's rim, the donut's icing) or decorates it
    (stripe, band, logo, eyes, sprinkles)."""
    parts = obj.kind.parts
    n = len(face)
    part = np.full(n, solid.part, dtype=np.int64)
    ux, uy, uz = unit[:, 0], unit[:, 1], unit[:, 2]
    rule = solid.texture
    decal = np.zeros(n, dtype=bool)
    decal_rgb = np.zeros((n, 3))
    if rule == "box_body":
        part = np.select([face <= 1, face <= 3, face == 5], [0, 1, 3], 0)
        stripe = (face >= 2) & (face <= 3) & (np.abs(uz + 0.1) < 0.13)
        decal, decal_rgb[:] = stripe, (235, 205, 60)
    elif rule == "glass":
        juice = (face != 1) & ((uz + 1) / 2 < solid.param)
        part = np.where(juice, 2, 0)
    elif rule == "ball":
        decal = (np.abs(uz) < 0.17) | (ux > 0.93)
        decal_rgb[:] = (245, 245, 245)
    elif rule == "mug":
        part = np.where(face == 1, 2, 1)
        coffee = (face == 1) & (ux * ux + uy * uy < 0.8**2)
        ang = np.arctan2(uy, ux)
        logo = (face == 0) & (np.abs(np.abs(ang) - np.pi) ** 2 / 0.5**2 + uz**2 / 0.45**2 < 1.0)
        decal = coffee | logo
        decal_rgb[coffee] = (70, 40, 20)
        decal_rgb[logo] = (240, 240, 240)
    elif rule == "duck_head":
        for side in (-1.0, 1.0):
            eye = (ux - 0.55) ** 2 + (uy - side * 0.62) ** 2 + (uz - 0.56) ** 2 < 0.2**2
            decal |= eye
        decal_rgb[:] = (10, 10, 10)
    elif rule == "donut":
        r = np.sqrt(ux * ux + uy * uy)
        ang = np.arctan2(uy, ux)
        icing = (face == 1) & (r < 0.9 + 0.06 * np.sin(7 * ang + 2 * np.pi * solid.param)) & (r > 0.45)
        part = np.where(icing, 1, 0)
        sprinkle = icing & (np.sin(23 * ang + 6.28 * solid.param) * np.sin(41 * r + 1.7) > 0.9)
        palette = np.array([(250, 250, 250), (60, 170, 240), (250, 230, 60), (120, 220, 120)], dtype=np.float64)
        decal = sprinkle
        decal_rgb[:] = palette[(np.floor(ang * 3.0).astype(np.int64)) % 4]
    albedo = np.array([parts[p].colour for p in range(len(parts))], dtype=np.float64)[part]
    albedo[decal] = decal_rgb[decal]
    return part, albedo


def _shade(albedo: np.ndarray, normal: np.ndarray, view: np.ndarray, shiny: np.ndarray) -> np.ndarray:
    """Lambert + Blinn under the fixed light: (N, 3) colours."""
    diff = np.clip(normal[:, 0] * _LIGHT[0] + normal[:, 1] * _LIGHT[1] + normal[:, 2] * _LIGHT[2], 0.0, 1.0)
    half = view + _LIGHT[None]
    half /= np.sqrt((half * half).sum(1))[:, None]
    spec = np.clip((normal * half).sum(1), 0.0, 1.0) ** 40
    return albedo * (0.38 + 0.62 * diff)[:, None] + (180.0 * shiny * spec)[:, None]


def shade_hits(scene: Scene, t: int, solids, origin: np.ndarray, dirs: np.ndarray, hits: Cast,
               see_through: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colours (N, 3) float and part labels of the hits: (object index (N,), part index (N,)), -1 for the table
    / nothing (objects are indexed in ``scene.objects`` order)."""
    n = len(dirs)
    rgb = np.zeros((n, 3))
    obj_idx = np.full(n, -1, dtype=np.int64)
    part_idx = np.full(n, -1, dtype=np.int64)
    xyz = origin[None] + np.where(np.isfinite(hits.s), hits.s, 0.0)[:, None] * dirs
    view = origin[None] - xyz
    view /= np.maximum(np.sqrt((view * view).sum(1)), 1e-12)[:, None]
    table = hits.index == len(solids)
    if table.any():
        col = cloth_colour(scene, xyz[table, 0], xyz[table, 1])
        shadow = np.ones(int(table.sum()))
        for obj in scene.objects:
            centre = scene.pose(obj, t)[:3, 3]
            d2 = (xyz[table, 0] - centre[0]) ** 2 + (xyz[table, 1] - centre[1]) ** 2
            shadow *= 1.0 - 0.4 * np.exp(-d2 / (1.1 * obj.kind.footprint) ** 2)
        rgb[table] = _shade(col, hits.normal[table], view[table], np.zeros(int(table.sum()))) * shadow[:, None]
    glass = np.zeros(n, dtype=bool)
    for i, (obj, solid, _) in enumerate(solids):
        m = hits.index == i
        if not m.any():
            continue
        part, albedo = surface(scene, obj, solid, hits.face[m], hits.unit[m])
        rgb[m] = _shade(albedo, hits.normal[m], view[m], np.full(int(m.sum()), solid.shiny))
        obj_idx[m] = scene.objects.index(obj)
        part_idx[m] = part
        if solid.texture == "glass":
            glass[np.flatnonzero(m)[part == 0]] = True
    if see_through and glass.any():
        behind = cast(solids, origin, dirs[glass], skip=hits.index[glass])
        back, _, _ = shade_hits(scene, t, solids, origin, dirs[glass], behind, see_through=False)
        rgb[glass] = 0.4 * rgb[glass] + 0.6 * back
    return rgb, obj_idx, part_idx


def render_frame(scene: Scene, t: int) -> RenderedFrame:
    """Render frame ``t`` (0-based) of ``scene`` with all its per-pixel ground truth."""
    cfg = scene.config
    h, w = cfg.height, cfg.width
    solids = scene.solids(t)
    u, v = pixel_centres(h, w)
    origin, dirs = camera_rays(scene, t, u, v)
    hits = cast(solids, origin, dirs)
    rgb, obj_idx, part_idx = shade_hits(scene, t, solids, origin, dirs, hits)

    labels = np.full((3, h * w), -1, dtype=np.int32)
    table = hits.index == len(solids)
    for li, level in enumerate(LEVELS):
        labels[li, table] = scene.region_id(level, TABLECLOTH, TABLECLOTH)
        for oi, obj in enumerate(scene.objects):
            for pi, p in enumerate(obj.kind.parts):
                m = (obj_idx == oi) & (part_idx == pi)
                if m.any():
                    name = obj.name if level == "large" else getattr(p, level)
                    labels[li, m] = scene.region_id(level, obj.name, name)

    valid = hits.index != NO_HIT
    depth = np.where(valid, hits.s, 0.0).astype(np.float32)
    R = scene.extrinsics(t)[:, :3]
    ncam = np.stack([R[i, 0] * hits.normal[:, 0] + R[i, 1] * hits.normal[:, 1] + R[i, 2] * hits.normal[:, 2]
                     for i in range(3)], axis=1)
    world = origin[None] + np.where(valid, hits.s, 0.0)[:, None] * dirs
    world[~valid] = np.nan
    noise = np.random.default_rng([cfg.seed, t, 7]).normal(0.0, 1.5, size=rgb.shape)
    out = np.clip(np.round(rgb + noise), 0, 255).astype(np.uint8)
    return RenderedFrame(rgb=out.reshape(h, w, 3), labels=labels.reshape(3, h, w), depth=depth.reshape(h, w),
                         valid=valid.reshape(h, w), normals=ncam.astype(np.float32).reshape(h, w, 3),
                         solid=hits.index.reshape(h, w), unit=hits.unit.reshape(h, w, 3),
                         world=world.reshape(h, w, 3))
