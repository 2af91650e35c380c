"""A small analytic moving scene for the tracking tests: a smooth random texture panned by the camera (known
sub-pixel translation per frame) and a textured square moving on its own, with exact ground truth: TAP-Vid tracks
(project pixel convention, centres at i + 0.5), occlusion, forward flow and the moving-object masks."""

from __future__ import annotations

import cv2
import numpy as np


def texture(rng: np.random.Generator, h: int, w: int, sigma: float = 2.0) -> np.ndarray:
    noise = rng.random((h, w)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), sigma)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return (tex * 255).astype(np.float32)


def moving_scene(seed: int = 0, t: int = 12, h: int = 96, w: int = 128, size: int = 28, n: int = 120,
                 pan=(1.3, 0.6), obj_vel=(-2.7, 1.4)) -> dict:
    rng = np.random.default_rng(seed)
    bg = texture(rng, h + 60, w + 60)
    fg = texture(rng, size, size, 1.5)
    obj0 = np.array([w * 0.6, h * 0.2])  # top-left corner (OpenCV coordinates) at frame 0
    pans = np.array([[10 + f * pan[0], 10 + f * pan[1]] for f in range(t)])  # frame shows bg at x + pan
    objs = np.array([obj0 + f * np.array(obj_vel) for f in range(t)])
    frames, masks = [], []
    for f in range(t):
        m = np.float32([[1, 0, -pans[f, 0]], [0, 1, -pans[f, 1]]])
        img = cv2.warpAffine(bg, m, (w, h), flags=cv2.INTER_LINEAR)
        mo = np.float32([[1, 0, objs[f, 0]], [0, 1, objs[f, 1]]])
        fg_img = cv2.warpAffine(fg, mo, (w, h), flags=cv2.INTER_LINEAR)
        cover = cv2.warpAffine(np.ones_like(fg), mo, (w, h), flags=cv2.INTER_LINEAR) > 0.5
        img = np.where(cover, fg_img, img)
        frames.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2))
        masks.append(cover)
    masks = np.stack(masks)

    def inside_obj(xy: np.ndarray, f: int) -> np.ndarray:
        rel = xy - objs[f]
        return (rel[..., 0] >= 0) & (rel[..., 0] <= size - 1) & (rel[..., 1] >= 0) & (rel[..., 1] <= size - 1)

    # queries: random frames and positions (OpenCV coordinates, away from the border)
    qf = rng.integers(0, t, n)
    qxy = np.stack([rng.uniform(4, w - 5, n), rng.uniform(4, h - 5, n)], 1)
    on_obj = inside_obj(qxy, qf) if n else np.zeros(0, bool)
    tracks = np.zeros((n, t, 2))
    occ = np.zeros((n, t), bool)
    for i in range(n):
        for f in range(t):
            if on_obj[i]:
                tracks[i, f] = qxy[i] + objs[f] - objs[qf[i]]
            else:
                tracks[i, f] = qxy[i] - pans[f] + pans[qf[i]]
                occ[i, f] = inside_obj(tracks[i, f], f)
            x, y = tracks[i, f]
            occ[i, f] |= not (0 <= x <= w - 1 and 0 <= y <= h - 1)
    # forward flow f -> f+1: background moves by -(pan step), the object by its velocity
    flows, flow_occ = [], []
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    for f in range(t - 1):
        fl = np.zeros((h, w, 2))
        fl[..., 0], fl[..., 1] = -pan[0], -pan[1]
        on = inside_obj(np.stack([xs, ys], -1), f)
        fl[on] = obj_vel
        nxt = np.stack([xs, ys], -1) + fl
        gone = (~on) & inside_obj(nxt, f + 1)
        gone |= (nxt[..., 0] < 0) | (nxt[..., 0] > w - 1) | (nxt[..., 1] < 0) | (nxt[..., 1] > h - 1)
        flows.append(fl)
        flow_occ.append(gone)
    q = np.stack([qf, qxy[:, 1] + 0.5, qxy[:, 0] + 0.5], 1)
    return {"frames": np.stack(frames), "query_points": q, "tracks": tracks + 0.5, "occluded": occ,
            "image_size": np.array([h, w]), "flow": np.stack(flows), "flow_occluded": np.stack(flow_occ),
            "moving": masks, "pans": pans, "objs": objs}


def write_frames(folder, frames: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i + 1:06d}.png"), f[:, :, ::-1])
