"""A tiny learnable scene in the agreed on-disk formats, for the training tests.

Frames are ``grid`` patches of 14x14 px; every patch belongs to one of a few "objects" at each level.
Tokens (written with ``preprocess.token_cache``) are sums of per-(level, object) random embeddings, so the
targets (per-object unit features, 4D LangSplat ``_s``/``_f`` layout) are a learnable function of the tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from preprocess.crop import FramePreprocessor
from preprocess.token_cache import STORAGE_DTYPES, quantize_int8, write_scene_meta, write_token_file
from utils.io import save_npy_atomic

PATCH = 14
PSI = 5  # camera + register tokens before the patch tokens


def make_tiny_scene(root: Path, n_frames: int = 8, grid: tuple[int, int] = (2, 3), dim: int = 32,
                    lang_dim: int = 3, n_objects: int = 3, eval_frames: tuple[int, ...] = (2, 5), seed: int = 0,
                    layers: tuple[int, ...] = (0, 1, 2, 3), video_dim: int = 0, layout: str = "patch",
                    backbone: str = "tiny-test", storage: str = "fp16") -> Path:
    """Write the scene under ``root``; ``layout="patch"``: labels per patch, ``"uniform"``: one object per
    level and frame (easy to fit: the loss-falls test), except a label-free corner patch at level small.
    ``backbone``: the backbone id recorded in the token cache (a different id = tokens of another backbone)."""
    rng = np.random.default_rng(seed)
    gh, gw = grid
    H, W = gh * PATCH, gw * PATCH
    crop = FramePreprocessor(target_width=W, mode="crop").plan((H, W))
    emb = rng.normal(size=(3, n_objects, dim)).astype(np.float32)
    feats = rng.normal(size=(3, n_objects, lang_dim)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    colors = rng.uniform(0.1, 0.9, size=(n_objects, 3))
    (root / "rgb" / "2x").mkdir(parents=True, exist_ok=True)
    tok_dir = root / "tokens"
    tok_dir.mkdir(parents=True, exist_ok=True)
    feat_dir = root / "clip_features-language_features_dim3"
    frames_meta = []
    for t in range(n_frames):
        key = f"{t + 1:06d}"
        if layout == "uniform":
            labels = np.repeat(rng.integers(0, n_objects, size=(3, 1, 1)), gh, 1).repeat(gw, 2)
            labels[0, 0, 0] = -1  # one patch without a small-level region
        else:
            labels = rng.integers(0, n_objects, size=(3, gh, gw))
            labels[:, 0, 0] = -1  # one patch without any region at every level
        # tokens
        patch_tok = np.zeros((gh * gw, dim), np.float32)
        for lvl in range(3):
            lab = labels[lvl].reshape(-1)
            patch_tok += np.where(lab[:, None] >= 0, emb[lvl][np.maximum(lab, 0)], 0.0)
        special = rng.normal(size=(PSI, dim)).astype(np.float32)
        tok = torch.from_numpy(np.concatenate([special, patch_tok])).to(torch.float16)
        meta = {"backbone": backbone, "token_dim": dim, "grid": [gh, gw], "patch_start_idx": PSI,
                "patch_size": PATCH, "crop": crop.to_dict(), "frame_key": key, "frame_index": t}
        toks = [tok + 0.01 * i for i in range(len(layers))]
        if storage == "int8":
            pairs = [quantize_int8(t.float()) for t in toks]
            write_token_file(tok_dir / f"{key}.safetensors", [q for q, _ in pairs], layers, meta,
                             scales=[sc for _, sc in pairs])
        else:
            write_token_file(tok_dir / f"{key}.safetensors", [t.to(STORAGE_DTYPES[storage]) for t in toks], layers,
                             meta)
        frames_meta.append({"key": key, "index": t})
        # pixel maps
        up = np.kron(labels, np.ones((1, PATCH, PATCH), dtype=np.int64))  # (3, H, W)
        seg = np.full((4, H, W), -1.0, np.float32)
        rows = []
        for lvl in range(3):
            offset = len(rows)
            present = sorted(int(v) for v in np.unique(up[lvl]) if v >= 0)
            remap = {v: offset + j for j, v in enumerate(present)}
            for v in present:
                seg[lvl + 1][up[lvl] == v] = remap[v]
                rows.append(feats[lvl, v])
        seg[0] = seg[1]
        save_npy_atomic(seg, feat_dir / f"{key}_s.npy")
        save_npy_atomic(np.stack(rows).astype(np.float32), feat_dir / f"{key}_f.npy")
        small = np.maximum(up[0], 0)
        rgb = (colors[small] * 255).astype(np.uint8)
        cv2.imwrite(str(root / "rgb" / "2x" / f"{key}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if video_dim:
            vdir = root / "video_features-language_features_dim6"
            vf = rng.normal(size=(n_objects, video_dim)).astype(np.float32)
            save_npy_atomic(up[2:3].astype(np.float32), vdir / f"{key}_s.npy")
            save_npy_atomic(vf, vdir / f"{key}_f.npy")
    write_scene_meta(tok_dir, {"backbone": backbone, "layers": list(layers), "token_dim": dim,
                               "grid": [gh, gw], "patch_start_idx": PSI, "patch_size": PATCH,
                               "crop": crop.to_dict(), "dtype": storage, "num_tokens": PSI + gh * gw,
                               "frames": frames_meta, "complete": True})
    (root / "gt").mkdir(exist_ok=True)
    (root / "gt" / "names.json").write_text(json.dumps({"eval_frames": list(eval_frames)}))
    return root


def make_cropped_scene(root: Path, orig_hw: tuple[int, int], target_width: int = 42, mode: str = "crop",
                       n_frames: int = 4, dim: int = 16, lang_dim: int = 3, video_dim: int = 0, seed: int = 0,
                       eval_frames: tuple[int, ...] = (1,), index_dtypes: tuple[str, ...] = ("float32",)) -> Path:
    """A scene whose frames (``orig_hw``) are resized / cropped / padded / turned by ``mode`` to the network input,
    with random frames, tokens and per-pixel targets at the original size (not learnable: for exactness tests).
    Frame ``t``'s ``_s.npy`` is stored as ``index_dtypes[t % len(index_dtypes)]``. ``tokens/meta.json`` records
    ``mode`` and ``target_width`` as ``preprocess.extract_tokens`` does."""
    rng = np.random.default_rng(seed)
    crop = FramePreprocessor(target_width=target_width, mode=mode).plan(orig_hw)
    h, w = crop.input_hw
    gh, gw = h // PATCH, w // PATCH
    H, W = orig_hw
    (root / "rgb" / "2x").mkdir(parents=True, exist_ok=True)
    feat_dir = root / "clip_features-language_features_dim3"
    frames_meta = []
    for t in range(n_frames):
        key = f"{t + 1:06d}"
        toks = [torch.from_numpy(rng.normal(size=(PSI + gh * gw, dim)).astype(np.float32)).half() for _ in range(4)]
        meta = {"backbone": "tiny-test", "token_dim": dim, "grid": [gh, gw], "patch_start_idx": PSI,
                "patch_size": PATCH, "crop": crop.to_dict(), "frame_key": key, "frame_index": t}
        write_token_file(root / "tokens" / f"{key}.safetensors", toks, [0, 1, 2, 3], meta)
        frames_meta.append({"key": key, "index": t})
        cv2.imwrite(str(root / "rgb" / "2x" / f"{key}.png"), rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8))
        n = int(rng.integers(2, 9))
        seg = rng.integers(-1, n, size=(4, H, W)).astype(index_dtypes[t % len(index_dtypes)])
        save_npy_atomic(seg, feat_dir / f"{key}_s.npy")
        save_npy_atomic(rng.normal(size=(n, lang_dim)).astype(np.float32), feat_dir / f"{key}_f.npy")
        if video_dim:
            m = int(rng.integers(1, 5))
            vdir = root / "video_features-language_features_dim6"
            save_npy_atomic(rng.integers(-1, m, size=(1, H, W)).astype(np.float32), vdir / f"{key}_s.npy")
            save_npy_atomic(rng.normal(size=(m, video_dim)).astype(np.float32), vdir / f"{key}_f.npy")
    write_scene_meta(root / "tokens", {"backbone": "tiny-test", "layers": [0, 1, 2, 3], "token_dim": dim,
                                       "grid": [gh, gw], "patch_start_idx": PSI, "patch_size": PATCH,
                                       "crop": crop.to_dict(), "dtype": "fp16", "num_tokens": PSI + gh * gw,
                                       "frames": frames_meta, "complete": True, "mode": mode,
                                       "target_width": target_width})
    (root / "gt").mkdir(exist_ok=True)
    (root / "gt" / "names.json").write_text(json.dumps({"eval_frames": list(eval_frames)}))
    return root
