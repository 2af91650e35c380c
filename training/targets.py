"""Compact training samples, expanded on the training device.

A sample read by :class:`training.dataset.SceneDataset` does not hold dense per-pixel target features. It holds

- ``frame``: the network input as uint8 (3, h, w), cropped/resized/padded exactly as
  :meth:`preprocess.frames.FramePreprocessor.prepare` does (padding 255 = its 1.0);
- ``lang_index``: (3, h, w) region index maps of levels small/middle/large on the network grid, in the dtype of
  ``<key>_s.npy`` (float32), -1 where no region or outside the original frame;
- ``lang_table``: (N, k) float32, the rows of ``<key>_f.npy``;
- optionally ``video_index`` (1, h, w) + ``video_table`` (M, v) for the time-sensitive targets.

:func:`collate_samples` stacks them (tables zero-padded to the longest, with a ``*_rows`` count per sample) and
:func:`expand_targets`, run on the device after :func:`batch_to_device`, turns the batch into what the loss reads:
``frame`` float32 in [0, 1], ``lang_target`` (B, 3, k, h, w) float32, ``lang_mask`` (B, 3, h, w) bool, and
``video_target`` (B, v, h, w) + ``video_mask`` (B, h, w). The values are bit for bit those of a dense gather on the
CPU (the previous data path): the index maps are converted to int64 the same way (truncation), masked pixels read a
zero row, the frame is the same uint8 / 255 division (on the CPU) or a lookup table of it (elsewhere), so the loss
and the trained weights do not change. Besides the tokens, a 518x294 sample is ~2.3 MB (uint8 frame, float32
index maps) instead of ~7.8 MB (float frame, dense 3-d targets, masks), and the per-pixel gather (several ms per
sample on the CPU) is a negligible kernel on a GPU.

The mapping from the network grid to the original target pixels (:class:`GridMap`, nearest neighbour through the
cache's :class:`preprocess.frames.CropInfo`) is computed once per scene; when it is separable (every mode but
the published ``original`` rotation) an index map is read with two row/column takes, or as a plain view of the
memory-mapped ``_s.npy`` when the frame is the network input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from preprocess.crop import CropInfo, FramePreprocessor
from preprocess.frames import FrameRef, exif_orientation, read_frame
from preprocess.token_cache import TokenSlices
from utils.cli import reading

TARGETS = ("lang", "video")  # prefixes of the compact target keys: <p>_index, <p>_table, <p>_rows
# uint8 -> float32 frame values, computed as FramePreprocessor.prepare computes them (on the CPU)
FRAME_LUT = torch.arange(256, dtype=torch.int64).to(torch.uint8).float().div_(255.0)


def input_grid_to_original(crop: CropInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each network-input pixel, the nearest original pixel: (oy, ox, valid), each (h, w)."""
    h, w = crop.input_hw
    ys, xs = np.mgrid[0:h, 0:w]
    xy = np.stack([xs, ys], axis=-1).astype(np.float64)
    o = crop.input_to_original_xy(xy)
    H, W = crop.orig_hw
    ox = np.floor(o[..., 0] + 0.5).astype(np.int64)
    oy = np.floor(o[..., 1] + 0.5).astype(np.int64)
    valid = (ox >= 0) & (ox < W) & (oy >= 0) & (oy < H)
    return np.clip(oy, 0, H - 1), np.clip(ox, 0, W - 1), valid


def _as_index(a: np.ndarray) -> np.ndarray | slice:
    """A contiguous increasing run of indices as a slice (a view instead of a copy), else the array."""
    if a.size and np.array_equal(a, np.arange(a[0], a[0] + a.size)):
        return slice(int(a[0]), int(a[0]) + a.size)
    return a


@dataclass
class GridMap:
    """Where each network-input pixel reads a target map of the original (H, W) frame.

    Separable (``flat`` None): pixel (y, x) reads original (``rows[y]``, ``cols[x]``). Otherwise (rotated crops)
    it reads the flat original index ``flat[y * w + x]``. ``invalid`` (h, w) marks pixels outside the original
    frame (padding), None when there is none."""

    hw: tuple[int, int]
    orig_hw: tuple[int, int]
    rows: np.ndarray | slice | None
    cols: np.ndarray | slice | None
    flat: np.ndarray | None
    invalid: np.ndarray | None

    @classmethod
    def of(cls, crop: CropInfo) -> GridMap:
        oy, ox, valid = input_grid_to_original(crop)
        h, w = oy.shape
        invalid = None if valid.all() else ~valid
        if bool((oy == oy[:, :1]).all()) and bool((ox == ox[:1, :]).all()):
            return cls((h, w), tuple(crop.orig_hw), _as_index(oy[:, 0]), _as_index(ox[0]), None, invalid)
        flat = (oy * crop.orig_hw[1] + ox).reshape(-1)
        return cls((h, w), tuple(crop.orig_hw), None, None, flat, invalid)

    def read(self, path: Path, levels: slice) -> np.ndarray:
        """The ``levels`` of the (levels, H, W) map ``path`` on the network grid: (L, h, w), -1 at invalid pixels.

        Memory-mapped: only the rows the grid reads are touched; the result may be a view of the file mapping
        (copy-on-write, so it stays writable). Dtype: the file's (float32 for ``_s.npy``; also int32, int64,
        float64), or int64 for other dtypes (converted as the dense gather converted every map: same values)."""
        # a str, not a Path: numpy's memmap resolves a Path (a syscall per folder) on every read
        with reading(path, "regenerate the semantic targets (python -m preprocess.extract_semantics)"):
            seg = np.load(str(path), mmap_mode="c", allow_pickle=False)[levels]
        if self.flat is not None:
            out = np.take(seg.reshape(seg.shape[0], -1), self.flat, axis=1).reshape(seg.shape[0], *self.hw)
        else:
            out = seg[:, self.rows] if isinstance(self.rows, slice) else np.take(seg, self.rows, axis=1)
            out = out[:, :, self.cols] if isinstance(self.cols, slice) else np.take(out, self.cols, axis=2)
        if out.dtype not in _INDEX_DTYPES:
            out = out.astype(np.int64)  # what the dense gather did with every dtype
        if self.invalid is not None:
            if np.may_share_memory(out, seg):
                out = np.array(out)  # never write into the file mapping
            out[:, self.invalid] = -1
        return out


_INDEX_DTYPES = {np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64)}


def frame_uint8(pre: FramePreprocessor, rgb: np.ndarray) -> torch.Tensor:
    """rgb uint8 (H, W, 3) -> the network input (3, h, w) as uint8: :meth:`FramePreprocessor.prepare` without the
    float conversion (same plan, rotation and bicubic resize; padding 255, which ``/ 255`` makes its 1.0)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) frame, got {rgb.dtype} {rgb.shape}")
    info = pre.plan(rgb.shape[:2])
    if info.rot90:
        rgb = np.rot90(rgb, info.rot90)
    rh, rw = info.resized_hw
    if (rh, rw) != tuple(rgb.shape[:2]):
        rgb = np.array(Image.fromarray(rgb).resize((rw, rh), Image.Resampling.BICUBIC))
    y0, x0, y1, x1 = info.window
    cy0, cx0, cy1, cx1 = info.clipped_window()
    chw = rgb[cy0:cy1, cx0:cx1].transpose(2, 0, 1)
    if (cy0, cx0, cy1, cx1) == (y0, x0, y1, x1):
        return torch.from_numpy(np.ascontiguousarray(chw))
    out = np.full((3, y1 - y0, x1 - x0), 255, np.uint8)
    out[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = chw
    return torch.from_numpy(out)


def read_frame_uint8(ref: FrameRef, pre: FramePreprocessor) -> torch.Tensor:
    """Decode frame ``ref`` and prepare it: ``frame_uint8(pre, read_frame(ref))``. An 8-bit 3-channel image that
    needs no resize or rotation is cut straight from the decoded BGR pixels into the (3, h, w) layout (one pass
    instead of a BGR->RGB copy plus a transpose); everything else goes through :func:`read_frame`."""
    if not ref.is_video:
        img = cv2.imread(str(ref.path), cv2.IMREAD_UNCHANGED)
        if img is not None and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and \
                exif_orientation(ref.path) == 1:  # a turned phone photo goes through read_frame
            info = pre.plan(img.shape[:2])
            if not info.rot90 and tuple(info.resized_hw) == img.shape[:2]:
                y0, x0, y1, x1 = info.window
                cy0, cx0, cy1, cx1 = info.clipped_window()
                out = np.full((3, y1 - y0, x1 - x0), 255, np.uint8) if (cy0, cx0, cy1, cx1) != (y0, x0, y1, x1) \
                    else np.empty((3, y1 - y0, x1 - x0), np.uint8)
                b, g, r = cv2.split(np.ascontiguousarray(img[cy0:cy1, cx0:cx1]))
                for c, plane in enumerate((r, g, b)):
                    out[c, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = plane
                return torch.from_numpy(out)
            return frame_uint8(pre, np.ascontiguousarray(img[:, :, 2::-1]))
    return frame_uint8(pre, read_frame(ref))


def frame_to_float(frame: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> float32 in [0, 1], the values :meth:`FramePreprocessor.prepare` gives: the same division
    on the CPU, a lookup of it elsewhere (a CUDA division by a scalar multiplies by its reciprocal, which can
    differ in the last bit). Float frames are returned as they are."""
    if frame.is_floating_point():
        return frame
    if frame.device.type == "cpu":
        return frame.float().div_(255.0)
    lut = _DEVICE_LUTS.get(frame.device)
    if lut is None:
        lut = _DEVICE_LUTS[frame.device] = FRAME_LUT.to(frame.device)
    return torch.take(lut, frame.long())


_DEVICE_LUTS: dict[torch.device, torch.Tensor] = {}


def _read_tokens(slices: Sequence[TokenSlices], dtype: torch.dtype | None) -> list[torch.Tensor]:
    """Every sample's layers read from its file straight into the batch: list of (B, P, 2C), one per layer."""
    first = slices[0]
    if any(s.shape != first.shape or len(s.offsets) != len(first.offsets) for s in slices):
        raise ValueError("samples with different token shapes cannot share a batch")
    outs = [torch.empty((len(slices), *first.shape), dtype=dtype or first.dtype) for _ in first.offsets]
    for b, s in enumerate(slices):
        s.read_into(outs, b)
    return outs


def _stack_tokens(layers: Sequence[torch.Tensor], dtype: torch.dtype | None) -> torch.Tensor:
    first = layers[0]
    dtype = dtype or first.dtype
    if all(t.dtype == dtype for t in layers):
        return torch.stack(list(layers))
    out = torch.empty((len(layers), *first.shape), dtype=dtype)
    for b, t in enumerate(layers):  # convert while copying: one pass, one allocation
        out[b].copy_(t)
    return out


def _stack_index(maps: Sequence[Any]) -> torch.Tensor:
    arrays = [m.numpy() if torch.is_tensor(m) else m for m in maps]
    if len({a.dtype for a in arrays}) > 1:
        arrays = [a.astype(np.int64) for a in arrays]  # the dense gather's conversion, sample by sample
    return torch.from_numpy(np.stack(arrays))


def _pad_tables(tables: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N_b, k) tables -> (B, max N + 1, k) float32 zero-padded (at least one zero row each) and (B,) N_b."""
    rows = torch.tensor([t.shape[0] for t in tables], dtype=torch.int64)
    out = torch.zeros((len(tables), int(rows.max()) + 1, tables[0].shape[1]), dtype=torch.float32)
    for b, t in enumerate(tables):
        out[b, : t.shape[0]] = t
    return out, rows


def collate_samples(samples: Sequence[dict[str, Any]], token_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Stack samples of one input size: tokens -> list of (B, P, 2C) (in ``token_dtype`` when given, converted
    while stacking; default the storage dtype; samples that hold :class:`~preprocess.token_cache.TokenSlices` are
    read from their files straight into the batch); ``<t>_index`` -> (B, L, h, w); ``<t>_table`` -> (B, N + 1, k)
    zero-padded plus ``<t>_rows`` (B,); other tensors -> (B, ...); everything else -> lists."""
    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        if k == "tokens" and all(isinstance(v, TokenSlices) for v in vals):
            out[k] = _read_tokens(vals, token_dtype)
        elif k == "tokens":
            vals = [v.load() if isinstance(v, TokenSlices) else v for v in vals]
            out[k] = [_stack_tokens(layer, token_dtype) for layer in zip(*vals, strict=True)]
        elif k.endswith("_index") and k[: -len("_index")] in TARGETS:
            out[k] = _stack_index(vals)
        elif k.endswith("_table") and k[: -len("_table")] in TARGETS:
            out[k], out[k[: -len("_table")] + "_rows"] = _pad_tables(vals)
        elif torch.is_tensor(vals[0]):
            out[k] = torch.stack(vals)
        else:
            out[k] = vals
    return out


def batch_to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Move a collated batch to ``device`` (non-blocking): tokens as float32, the frame as float32 in [0, 1]
    (:func:`frame_to_float`), the compact targets as they are (:func:`expand_targets` expands them)."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            out[k] = frame_to_float(v) if k == "frame" else v
        elif isinstance(v, list) and v and torch.is_tensor(v[0]):
            out[k] = [t.to(device, non_blocking=True).float() for t in v]
        else:
            out[k] = v
    return out


def expand_level_targets(index: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """index (B, L, h, w) (-1 = none), table (B, N + 1, k) with zero rows past each sample's own ->
    (features (B, L, k, h, w) float32 contiguous, mask (B, L, h, w) bool), on ``index``'s device."""
    idx = index.long()  # truncation, as the dense gather's astype(np.int64)
    mask = idx >= 0
    B, n_rows, k = table.shape
    rows = torch.where(mask, idx, n_rows - 1)  # the last row is zero in every sample
    rows = rows + (torch.arange(B, device=idx.device) * n_rows).view(B, 1, 1, 1)
    flat = table.reshape(B * n_rows, k).t().contiguous()  # (k, B * (N + 1))
    out = torch.empty((B, idx.shape[1], k, *idx.shape[2:]), dtype=table.dtype, device=idx.device)
    for c in range(k):  # k is small (3 or 6): one take per channel writes the (B, L, k, h, w) layout directly
        out[:, :, c] = torch.take(flat[c], rows)
    return out, mask


def expand_targets(batch: dict[str, Any]) -> dict[str, Any]:
    """A collated (and moved) compact batch -> the same batch with ``lang_target`` (B, 3, k, h, w), ``lang_mask``
    (B, 3, h, w) and, with video targets, ``video_target`` (B, v, h, w) + ``video_mask`` (B, h, w); a batch that
    already holds them is returned unchanged."""
    if "lang_index" not in batch or "lang_target" in batch:
        return batch
    out = dict(batch)
    out["lang_target"], out["lang_mask"] = expand_level_targets(batch["lang_index"], batch["lang_table"])
    if "video_index" in batch:
        v, m = expand_level_targets(batch["video_index"], batch["video_table"])
        out["video_target"], out["video_mask"] = v[:, 0], m[:, 0]
    return out


def batch_checks(batch: dict[str, Any]) -> list[torch.Tensor]:
    """Scalar bool tensors (on the batch's device) that hold when the compact targets are usable: finite
    tables and index maps, no index beyond its sample's table rows."""
    checks = []
    for p in TARGETS:
        if f"{p}_index" not in batch:
            continue
        idx, table, rows = batch[f"{p}_index"], batch[f"{p}_table"], batch[f"{p}_rows"]
        checks.append(torch.isfinite(table).all())
        if idx.is_floating_point():
            checks.append(torch.isfinite(idx).all())
        # int64(x) < N, as the dense gather checked it: x <= -1 (no region) or x < N
        checks.append(((idx <= -1) | (idx < rows.view(-1, 1, 1, 1).to(idx.dtype))).all())
    return checks
