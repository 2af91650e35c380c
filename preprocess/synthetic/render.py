"""2.5-D painter's-algorithm renderer of a :class:`~preprocess.synthetic.scene.Scene` (numpy + OpenCV).

A textured tablecloth plane is warped by the per-frame camera similarity; objects are drawn back to front
(sorted by the world y of their base, so the occlusion order changes as they move) with simple shading,
soft shadows and decals. Label maps are written with the same masks as the colours, so they are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .scene import LEVELS, TABLECLOTH, Primitive, Scene, ellipse

_SHIFT = 4  # sub-pixel bits for cv2.fillPoly
_LIGHT = np.array([-0.45, -0.6, 0.66]) / np.linalg.norm([-0.45, -0.6, 0.66])


@dataclass
class RenderedFrame:
    """One rendered frame.

    rgb: uint8 (H, W, 3) RGB. labels: int32 (3, H, W) region ids for small/middle/large, -1 = none.
    full_masks: object name -> bool (H, W) of the object as if nothing occluded it.
    depth_order: object names back to front.
    """

    rgb: np.ndarray
    labels: np.ndarray
    full_masks: dict[str, np.ndarray]
    depth_order: list[str]


def make_tablecloth(scene: Scene) -> np.ndarray:
    """Float32 (2H, 2W, 3) RGB texture of the checkered tablecloth in world pixels (weave + stains)."""
    ww, wh = scene.world_size
    rng = np.random.default_rng(scene.cloth_seed)
    y, x = np.mgrid[0:wh, 0:ww].astype(np.float64)
    c, s = np.cos(scene.cloth_angle), np.sin(scene.cloth_angle)
    u, v = c * x + s * y, -s * x + c * y
    square = max(6.0, scene.config.height / 7.0)
    checker = ((np.floor(u / square) + np.floor(v / square)) % 2).astype(np.float64)
    # gingham: stripes of the dark colour cross the light squares at half strength
    light, dark = np.array([238, 232, 214.0]), np.array([150, 95, 70.0])
    mix = 0.85 * checker
    tex = light[None, None] * (1 - mix[..., None]) + dark[None, None] * mix[..., None]
    weave = 1.0 + 0.05 * np.sin(2 * np.pi * u / 3.0) * np.sin(2 * np.pi * v / 3.0)
    blotch = cv2.GaussianBlur(rng.normal(0, 1, size=(wh, ww)).astype(np.float32), (0, 0), 9.0)
    blotch = blotch / (np.abs(blotch).max() + 1e-6)
    grain = rng.normal(0, 0.02, size=(wh, ww))
    tex = tex * (weave * (1.0 + 0.07 * blotch + grain))[..., None]
    return np.clip(tex, 0, 255).astype(np.float32)


def _fill(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W) mask of a polygon given in image coordinates (float (N, 2))."""
    m = np.zeros(shape, dtype=np.uint8)
    pts = np.round(points * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(m, [pts], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return m.astype(bool)


def _shade(p: Primitive, pts: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (multiplier, specular add) for the pixels (ys, xs) of primitive ``p`` (image polygon pts)."""
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    u = (xs - x0) / max(x1 - x0, 1e-6)
    v = (ys - y0) / max(y1 - y0, 1e-6)
    if p.shading == "sphere":
        dx, dy = 2 * u - 1, 2 * v - 1
        nz = np.sqrt(np.clip(1 - dx * dx - dy * dy, 0.0, 1.0))
        diff = np.clip(dx * _LIGHT[0] + dy * _LIGHT[1] + nz * _LIGHT[2], 0.0, 1.0)
        return 0.3 + 0.7 * diff, 200.0 * diff**24
    if p.shading == "cylinder":
        c = np.cos((u - 0.35) * np.pi * 0.85)
        return 0.4 + 0.6 * np.clip(c, 0, 1), 120.0 * np.clip(c, 0, 1) ** 30
    if p.shading == "glass":
        band = np.exp(-(((u - 0.22) / 0.06) ** 2))
        return np.ones_like(u), 90.0 * band
    return 0.8 + 0.2 * (1 - v) * (1 - 0.3 * u), np.zeros_like(u)


def render_frame(scene: Scene, t: int, cloth: np.ndarray | None = None) -> RenderedFrame:
    """Render frame ``t`` (0-based) of ``scene``; ``cloth`` = :func:`make_tablecloth` output (cached by callers)."""
    cfg = scene.config
    h, w = cfg.height, cfg.width
    if cloth is None:
        cloth = make_tablecloth(scene)
    cam = scene.camera(t)
    rgb = cv2.warpAffine(cloth, cam, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    rgb = rgb.astype(np.float64)
    labels = np.empty((3, h, w), dtype=np.int32)
    for li, level in enumerate(LEVELS):
        labels[li] = scene.region_id(level, TABLECLOTH, TABLECLOTH)

    def to_image(obj, local: np.ndarray, t: int) -> np.ndarray:
        pos, size, face = scene.position(obj, t), scene.scale(obj, t), scene.facing(obj, t)
        world = pos[None] + size * np.stack([face * local[:, 0], local[:, 1]], axis=1)
        return world @ cam[:, :2].T + cam[:, 2][None]

    order = sorted(scene.objects, key=lambda o: scene.depth(o, t))
    # soft contact shadows on the cloth
    shadow = np.zeros((h, w), dtype=np.float32)
    for obj in order:
        shadow = np.maximum(shadow, _fill(to_image(obj, ellipse(0.05, 0.0, 0.55, 0.13, n=24), t), (h, w))
                            .astype(np.float32))
    sigma = max(1.0, 0.02 * min(h, w))
    shadow = cv2.GaussianBlur(shadow, (0, 0), sigma)
    rgb *= (1.0 - 0.35 * shadow)[..., None]

    full_masks: dict[str, np.ndarray] = {}
    for obj in order:
        full = np.zeros((h, w), dtype=bool)
        large_id = scene.region_id("large", obj.name, obj.name)
        for p in obj.kind.build(scene.state_value(obj, t), obj.aux):
            pts = to_image(obj, p.polygon, t)
            mask = _fill(pts, (h, w))
            for hole in p.holes:
                mask &= ~_fill(to_image(obj, hole, t), (h, w))
            if not mask.any():
                continue
            full |= mask
            ys, xs = np.nonzero(mask)
            mult, spec = _shade(p, pts, ys.astype(np.float64), xs.astype(np.float64))
            colour = np.asarray(p.colour, dtype=np.float64)[None] * mult[:, None] + spec[:, None]
            for dpoly, dcol in p.decals:
                dmask = _fill(to_image(obj, dpoly, t), (h, w))[ys, xs]
                colour[dmask] = np.asarray(dcol, dtype=np.float64)[None] * mult[dmask, None] + spec[dmask, None]
            if p.alpha < 1.0:
                colour = p.alpha * colour + (1 - p.alpha) * rgb[ys, xs]
            rgb[ys, xs] = colour
            labels[0][mask] = scene.region_id("small", obj.name, p.small)
            labels[1][mask] = scene.region_id("middle", obj.name, p.middle)
            labels[2][mask] = large_id
        full_masks[obj.name] = full

    noise = np.random.default_rng([scene.config.seed, t, 7]).normal(0.0, 1.5, size=rgb.shape)
    out = np.clip(np.round(rgb + noise), 0, 255).astype(np.uint8)
    return RenderedFrame(rgb=out, labels=labels, full_masks=full_masks, depth_order=[o.name for o in order])
