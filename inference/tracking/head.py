"""The StreamVGGT track head on cached tokens, windowed for bounded memory.

The head tracks from the first frame it is given (it samples the query features in frame 0). A query at frame t
is therefore tracked on the clip **reordered** as ``[t, 0, 1, .., t-1, t+1, .., T-1]`` (the scheme of VGGT's
demo): frame t first, then every other frame in its original order. For bounded memory the reordered clip is cut
into windows that all start with frame t: ``[t] + others[k·(W-1) : (k+1)·(W-1)]``, W = ``window``; each window is
one pass of the head (feature extractor per frame, then the iterative tracker over the window), and its outputs
are put back at the original frame indices. The query frame itself keeps the query point (the head's own rule).

Memory: one window of feature maps (W x 128 x H/2 x W/2 floats; 16 frames at 518 x 294: 0.3 GB) plus its
tokens; the token cache is memory-mapped. The tokens are those the backbone computed in the video's own (causal)
order; only the head sees the reordered clip.

Coordinates: queries and tracks are in the original frame's pixels (centres at i + 0.5); the token cache's crop
record maps them to the network input (pixel centres at integers, where the head works) and back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from preprocess.crop import CropInfo
from utils.cli import UserError

logger = logging.getLogger(__name__)

TokenLoader = Callable[[int], Sequence[torch.Tensor]]


def reordered(t: int, num_frames: int) -> list[int]:
    """The clip order for a query at frame t: ``[t, 0, .., t-1, t+1, .., T-1]``."""
    return [t] + [f for f in range(num_frames) if f != t]


def _stack(frames: list[Sequence[torch.Tensor]], layers: Sequence[int]) -> list[torch.Tensor | None]:
    """Per-frame token lists (one (P, C) tensor per cached layer) -> the head's tokens_list: index ``layer`` holds
    (1, S, P, C), the other indices None."""
    out: list[torch.Tensor | None] = [None] * (max(layers) + 1)
    for k, layer in enumerate(layers):
        out[layer] = torch.stack([f[k] for f in frames])[None]
    return out


@torch.inference_mode()
def track_from_frame(head, load: TokenLoader, layers: Sequence[int], order: Sequence[int], query_xy: torch.Tensor,
                     input_hw: tuple[int, int], patch_start_idx: int, window: int = 16, iters: int | None = None,
                     device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track ``query_xy`` (N, 2) network-input pixels of frame ``order[0]`` over the frames ``order``.

    ``load(f)`` gives frame f's cached layers (in ``layers`` order). Returns, indexed by position in ``order``:
    coords (S, N, 2), visibility (S, N), confidence (S, N) as float64 numpy arrays.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 frames (the query frame and at least one other), not {window}")
    dtype = next(head.parameters()).dtype
    h, w = input_hw
    n, s_all = query_xy.shape[0], len(order)
    coords = np.zeros((s_all, n, 2))
    vis = np.zeros((s_all, n))
    conf = np.zeros((s_all, n))
    coords[0] = query_xy.cpu().double().numpy()
    vis[0], conf[0] = 1.0, 1.0

    def tokens(f: int) -> list[torch.Tensor]:
        return [t.to(device=device, dtype=dtype) for t in load(f)]

    anchor = tokens(order[0])
    q = query_xy.to(device=device, dtype=dtype)[None]
    step = window - 1
    for start in range(1, s_all, step):
        idx = list(range(start, min(start + step, s_all)))
        frames = [anchor] + [tokens(order[i]) for i in idx]
        shape = (1, len(frames), 3, h, w)
        c, v, cf = head(_stack(frames, layers), shape, patch_start_idx, query_points=q, iters=iters,
                        frames_chunk_size=1)
        coords[idx] = c[-1][0, 1:].double().cpu().numpy()
        vis[idx] = v[0, 1:].double().cpu().numpy()
        conf[idx] = cf[0, 1:].double().cpu().numpy() if cf is not None else v[0, 1:].double().cpu().numpy()
    return coords, vis, conf


def track_queries(head, load: TokenLoader, layers: Sequence[int], num_frames: int, query_xy_input: np.ndarray,
                  query_frames: np.ndarray, input_hw: tuple[int, int], patch_start_idx: int, window: int = 16,
                  iters: int | None = None, device: torch.device | str = "cpu", progress: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track points given in network-input pixels, grouped by query frame (each group on its reordered clip).
    -> coords (N, T, 2) input pixels, visibility (N, T), confidence (N, T)."""
    n = len(query_frames)
    coords = np.zeros((n, num_frames, 2))
    vis = np.zeros((n, num_frames))
    conf = np.zeros((n, num_frames))
    groups = np.unique(query_frames)
    for t in tqdm(groups, desc="track head", unit="query frame", disable=not progress, leave=False):
        sel = np.flatnonzero(query_frames == t)
        order = reordered(int(t), num_frames)
        c, v, cf = track_from_frame(head, load, layers, order, torch.from_numpy(query_xy_input[sel]), input_hw,
                                    patch_start_idx, window, iters, device)
        coords[np.ix_(sel, order)] = np.transpose(c, (1, 0, 2))
        vis[np.ix_(sel, order)] = v.T
        conf[np.ix_(sel, order)] = cf.T
    return coords, vis, conf


def head_layers(head) -> list[int]:
    """The aggregator layers the track head's feature extractor reads."""
    return list(head.feature_extractor.intermediate_layer_idx)


def track_with_head(tokens_dir: str, keys: Sequence[str], queries: np.ndarray, image_size: tuple[int, int],
                    backbone: str, window: int = 16, iters: int = 4, device: str = "cpu", progress: bool = True
                    ) -> dict[str, np.ndarray]:
    """``python -m inference.track --method trackhead``: queries (N, 3) [t, y, x] original pixels -> the tracks
    dict (tracks (N, T, 2) original pixels, occluded = visibility < 0.5, confidence)."""
    from model.backbones import load_backbone
    from preprocess.token_cache import TokenCache, TokenCacheError

    try:
        cache = TokenCache(tokens_dir)
    except TokenCacheError as e:
        raise UserError(str(e)) from None
    missing = [k for k in keys if k not in cache]
    if missing:
        raise UserError(f"the token cache has no tokens for {len(missing)} frame(s) of the video (first: "
                        f"{missing[0]})", tokens_dir, "extract the tokens of this video with "
                        "python -m preprocess.extract_tokens")
    model, bid, _ = load_backbone(backbone, device)
    head = model.track_head
    need = head_layers(head)
    if not set(need) <= set(cache.layers):
        raise UserError(f"the token cache holds layers {cache.layers} but the track head reads {need}", tokens_dir,
                        f"re-extract with python -m preprocess.extract_tokens --layers {' '.join(map(str, need))}")
    if cache.backbone_id != bid:
        raise UserError(f"the tokens come from backbone {cache.backbone_id!r} but --backbone is {bid!r}",
                        tokens_dir, "pass the --backbone the tokens were extracted with")
    crop = CropInfo.from_dict(cache.crop)
    if tuple(crop.orig_hw) != tuple(image_size):
        raise UserError(f"the tokens were extracted from {crop.orig_hw[1]}x{crop.orig_hw[0]} frames, these are "
                        f"{image_size[1]}x{image_size[0]}", tokens_dir, "give the frames the tokens were made from")
    pos = [cache.layers.index(layer) for layer in need]

    def load(f: int) -> list[torch.Tensor]:
        layers = cache.load(keys[f])
        return [layers[i].float() for i in pos]

    q = np.asarray(queries, np.float64)
    qf = np.round(q[:, 0]).astype(np.int64)
    xy_in = np.asarray(crop.original_to_input_xy(q[:, [2, 1]] - 0.5), np.float32)
    try:
        coords, vis, conf = track_queries(head, load, need, len(keys), xy_in, qf, crop.input_hw,
                                          cache.patch_start_idx, window, iters, device, progress)
    except ValueError as e:
        if "too small" not in str(e):
            raise
        raise UserError(f"the frames are too small for the track head's correlation pyramid ({e})", tokens_dir,
                        "extract the tokens at a larger --target-width (the released head needs >= 256 px a side)"
                        ) from None
    tracks = np.asarray(crop.input_to_original_xy(coords), np.float64) + 0.5
    tracks[np.arange(len(q)), qf] = q[:, [2, 1]]  # the query frame holds the query exactly
    return {"tracks": tracks.astype(np.float32), "occluded": vis < 0.5, "confidence": conf.astype(np.float32)}
