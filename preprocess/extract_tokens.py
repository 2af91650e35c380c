"""Extract frozen StreamVGGT geometry tokens for every frame of a video into ``<scene>/tokens/``.

Usage (see ``--help``)::

    python -m preprocess.extract_tokens data/hypernerf/americano                 # official weights
    python -m preprocess.extract_tokens data/hypernerf --scenes americano chickchicken
    python -m preprocess.extract_tokens data/neu3d/coffee_martini --cameras cam00   # -> cam00/tokens/
    python -m preprocess.extract_tokens clip.mp4 --backbone tiny                   # random weights, for tests

Streaming: frames are fed in chunks of ``--chunk-size`` through the aggregator with a key/value cache that
keeps at most ``--window`` past frames (frame ``t`` attends to frames ``max(0, t - window) .. t``, the
published 4DLangVGGT rule with window 128), so memory is bounded by the window, not the video length.

Resume: a frame whose file exists and validates (header, tensor names, shapes and dtypes, size, metadata of this
run and, unless ``--no-verify``, the SHA-256 of its tensor bytes) is not rewritten; any other is rewritten. A
frame's tokens depend on every earlier frame through the cache, so to continue at frame ``k`` the backbone
is first re-run over frames ``0 .. k-1`` without writing (``--resume-replay full``, the default: the files
are then byte-identical to an uninterrupted run). ``--resume-replay window`` re-runs only the last
``window`` frames: faster, but the cache then lacks the older history, so later tokens differ slightly;
such frames are marked ``history: window`` in their metadata. Chunk boundaries are always multiples of
``--chunk-size`` counted from frame 0, so the computation is the same in every run.

Backbone identity: ``tiny-random-seed<N>`` for ``--backbone tiny``; for a checkpoint,
``streamvggt-sha256-<first 16 hex digits>`` of the file's SHA-256. Hashing 5 GB takes a while, so the
digest is cached beside the checkpoint in ``<file>.sha256.json`` keyed by size and mtime (recomputed when
either changes, or every run when that folder is read-only).

One run per tokens folder: a second run started on the same folder refuses (``<scene>/.tokens.lock``, see
:mod:`utils.lock`). Ctrl-C or SIGTERM ends with one line saying how many frames are kept (exit code 130 / 143);
re-running the same command resumes and gives the bytes of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model.backbones import BackboneSpec, backbone_help, checkpoint_sha256, tiny_backbone_id  # noqa: E402,F401
from model.backbones import load_backbone as load_backbone_model  # noqa: E402
from preprocess.crop import MODES, CropInfo, FramePreprocessor  # noqa: E402
from preprocess.frames import (  # noqa: E402
    FrameRef,
    FrameSourceInvalid,
    image_size,
    iter_frames,
    list_frames,
    read_frame,
)
from preprocess.layout import Job, discover_jobs, scene_jobs  # noqa: E402,F401  (re-exported)
from preprocess.token_cache import (  # noqa: E402
    META_FILE,
    RUN_FIELDS,
    STORAGE_DTYPES,
    SUFFIX,
    TokenCacheError,
    check_frame_file,
    describe_mismatch,
    dtype_name,
    frame_meta_for,
    quantize_int8,
    verify_token_file,
    write_scene_meta,
    write_token_file,
)
from utils.cli import (  # noqa: E402
    UserError,
    add_chunk_size_arg,
    add_compute_dtype_arg,
    add_device_arg,
    add_logging_args,
    cli_main,
    interrupted,
    setup_logging_from,
)
from utils.device import autocast, resolve_device, resolve_dtype  # noqa: E402
from utils.lock import output_lock  # noqa: E402
from utils.ranks import local_device_index, my_share, rank_and_world  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 128
DEFAULT_CHUNK = 1


# --------------------------------------------------------------------------------------------- backbone
@dataclass
class Backbone:
    """The frozen aggregator plus what identifies it. ``aggregator(images (B,S,3,H,W), cache)`` ->
    (list of ``depth`` tensors (B,S,P,2C), patch_start_idx); ``aggregator.new_cache(window)``."""

    aggregator: torch.nn.Module
    config: Any  # StreamVGGTConfig or VGGTConfig
    id: str
    info: dict[str, Any] = field(default_factory=dict)
    #: a windowed family (VGGT, PAGE-4D): the whole network, run through ``model.vggt.windows.WindowedRunner``
    model: torch.nn.Module | None = None
    streaming: bool = True


def load_aggregator(kind: str = "streamvggt", checkpoint: str | os.PathLike | None = None, seed: int = 0,
                  device: torch.device | str = "cpu") -> Backbone:
    """``kind``: a backbone specification (``streamvggt``, ``tiny``, ``tiny:<seed>``, a path or a Hub repo id,
    parsed by :class:`model.backbones.BackboneSpec`); ``checkpoint`` (with ``streamvggt``) and ``seed`` (with
    ``tiny``) are the older separate flags. A missing checkpoint is an error, never a fallback."""
    spec = backbone_spec(kind, checkpoint, seed)
    model, bid, info = load_backbone_model(spec, device="cpu")
    model = model.to(device).eval().requires_grad_(False)
    streaming = bool(info.get("streaming", True))
    return Backbone(aggregator=model.aggregator, config=model.config, id=bid, info=info,
                    model=None if streaming else model, streaming=streaming)


def backbone_spec(kind: str, checkpoint: str | os.PathLike | None, seed: int) -> BackboneSpec:
    """The one backbone specification from ``--backbone`` (+ the older ``--checkpoint`` / ``--seed``)."""
    spec = BackboneSpec.parse(kind)
    if spec.is_tiny:
        if checkpoint is not None:
            raise UserError("--checkpoint cannot be combined with --backbone tiny (random weights)", checkpoint,
                            "drop --checkpoint, or pass --backbone streamvggt")
        return spec if kind.strip().endswith(f"tiny:{spec.seed}") else BackboneSpec("tiny", seed=seed,
                                                                                      family=spec.family)
    if checkpoint is not None:
        if spec.source is not None:
            raise UserError("--checkpoint and a --backbone path both name the weights", checkpoint, "pass one")
        return BackboneSpec("checkpoint", str(checkpoint), family=spec.family)
    return spec


# --------------------------------------------------------------------------------------------- settings
class ExtractionSettingsError(UserError, ValueError):
    """Settings that cannot work (a chunk size of 0, a layer the backbone does not have, ...)."""


@dataclass
class ExtractionSettings:
    """What to extract and how. ``layers=None``: the backbone config's DPT layers (4, 11, 17, 23; tiny: 0..3).
    ``window=None``: unbounded cache. ``dtype``: storage precision (fp16, bf16, fp32, or int8 with per-token
    fp16 scales, see :mod:`preprocess.token_cache`); ``compute_dtype``: autocast on CUDA."""

    layers: Sequence[int] | None = None
    dtype: str = "fp16"
    compute_dtype: str = "fp32"
    chunk_size: int = DEFAULT_CHUNK
    window: int | None = DEFAULT_WINDOW
    target_width: int = 518
    mode: str = "resize"
    overwrite: bool = False
    resume_replay: str = "full"
    #: windowed backbones (VGGT, PAGE-4D): frames each window shares with the one before (``window`` = frames
    #: per window; the recorded ``chunk_size`` is then ``window - overlap``, the new frames per window)
    overlap: int = 4
    verify: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise ExtractionSettingsError(f"unknown storage dtype {self.dtype!r}; choose fp16, bf16, fp32 or int8")
        resolve_dtype(self.compute_dtype)
        if self.chunk_size < 1:
            raise ExtractionSettingsError(f"chunk size must be >= 1, got {self.chunk_size}")
        if self.window is not None and self.window < 0:
            raise ExtractionSettingsError(f"window must be >= 0 (or None for unbounded), got {self.window}")
        if self.mode not in MODES:
            raise ExtractionSettingsError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.resume_replay not in ("full", "window"):
            raise ExtractionSettingsError(f"resume replay must be 'full' or 'window', got {self.resume_replay!r}")


@dataclass
class ExtractionReport:
    """Outcome of one :func:`extract_tokens` call: frames written, skipped (already valid, or not rewritten),
    replayed (run through the backbone without writing), wall seconds and bytes written."""

    tokens_dir: Path
    num_frames: int
    written: int
    skipped: int
    replayed: int
    seconds: float
    bytes_written: int

    @property
    def frames_per_s(self) -> float:
        return (self.written + self.replayed) / self.seconds if self.seconds > 0 else math.inf


def _effective_compute_dtype(name: str, device: torch.device) -> str:
    dt = resolve_dtype(name)
    if dt != torch.float32 and device.type != "cuda":
        logger.warning("compute dtype %s is only used on CUDA; computing in fp32 on %s", name, device)
        return "fp32"
    return dtype_name(dt)


def build_scene_meta(backbone: Backbone, frames: Sequence[FrameRef], crop: CropInfo, layers: list[int],
                     s: ExtractionSettings, compute: str) -> dict[str, Any]:
    """The content of ``tokens/meta.json`` for this run (``complete`` False; deterministic: no times, no
    absolute paths)."""
    cfg = backbone.config
    p = cfg.patch_size
    grid = [crop.input_hw[0] // p, crop.input_hw[1] // p]
    src = frames[0]
    return {
        "backbone": backbone.id, "backbone_info": backbone.info, "layers": layers,
        "embed_dim": cfg.embed_dim, "token_dim": 2 * cfg.embed_dim,
        "num_tokens": cfg.patch_start_idx + grid[0] * grid[1], "grid": grid,
        "patch_start_idx": cfg.patch_start_idx, "patch_size": p, "dtype": s.dtype, "compute_dtype": compute,
        "crop": crop.to_dict(), "window": s.window, "chunk_size": s.chunk_size, "mode": s.mode,
        "target_width": s.target_width,
        "source": {"kind": "video" if src.is_video else "frames",
                   "name": src.path.name if src.is_video else "/".join(src.path.parent.parts[-3:])},
        "frames": [{"key": f.key, "index": f.index} for f in frames], "num_frames": len(frames),
        "complete": False,
    }


def _frame_size_error(ref: FrameRef, hw: tuple[int, int], first_hw: tuple[int, int]) -> FrameSourceInvalid:
    return FrameSourceInvalid(f"frame {ref.key} is {hw[1]}x{hw[0]} pixels but the first frame is "
                              f"{first_hw[1]}x{first_hw[0]}", ref.path,
                              "every frame of a video must have the same size: resize or remove it")


def _check_frame_sizes(frames: Sequence[FrameRef], first_hw: tuple[int, int]) -> None:
    """Refuse a frame folder whose images differ in size before anything is written (image headers only, as
    displayed; a header that cannot be read is left to the decoder, which names the file)."""
    for ref in frames:
        if ref.is_video:
            continue
        try:
            hw = image_size(ref.path)
        except Exception:  # noqa: BLE001 - reported by the decoder when the frame is read
            continue
        if hw != first_hw:
            raise _frame_size_error(ref, hw, first_hw)


def extract_tokens(backbone: Backbone, frames: Sequence[FrameRef], tokens_dir: str | os.PathLike,
                   settings: ExtractionSettings | None = None, device: torch.device | str = "cpu",
                   desc: str = "tokens") -> ExtractionReport:
    """Stream ``frames`` through the backbone and write ``tokens_dir/<key>.safetensors`` + ``meta.json``.

    Each file holds the selected layers, each (P, 2C) in the storage dtype (P = 5 + h*w patches). Frames
    whose files already validate are skipped (see the module docstring for the resume rule).
    Raises TokenCacheError when ``tokens_dir`` holds a run with other settings (unless ``overwrite``),
    :class:`utils.lock.OutputLockedError` when another process is writing ``tokens_dir``, and
    :class:`utils.cli.Interrupted` (saying how many frames are kept) on Ctrl-C / SIGTERM.
    """
    with output_lock(tokens_dir, "this tokens folder"):
        return _extract_locked(backbone, frames, tokens_dir, settings, device, desc)


def _extract_locked(backbone: Backbone, frames: Sequence[FrameRef], tokens_dir: str | os.PathLike,
                    settings: ExtractionSettings | None, device: torch.device | str, desc: str) -> ExtractionReport:
    s = settings or ExtractionSettings()
    device = torch.device(device)
    tokens_dir = Path(tokens_dir)
    frames = list(frames)
    if not frames:
        raise FileNotFoundError(f"no frames to extract into {tokens_dir}")
    cfg = backbone.config
    layers = [int(x) for x in (s.layers if s.layers is not None else cfg.dpt_layers)]
    bad = [x for x in layers if not 0 <= x < cfg.depth]
    if bad or len(set(layers)) != len(layers):
        raise ExtractionSettingsError(f"layers {layers} must be distinct and within 0..{cfg.depth - 1} for this "
                                      "backbone")
    if not backbone.streaming:
        if s.window is None or not 0 <= s.overlap < s.window:
            raise UserError(f"a windowed backbone ({backbone.info.get('family')}) needs --window N frames per "
                            f"window with 0 <= --overlap < N (got window {s.window}, overlap {s.overlap})", None,
                            "pass e.g. --window 32 --overlap 4")
        s = dataclasses.replace(s, chunk_size=s.window - s.overlap)
    store_dtype = STORAGE_DTYPES[s.dtype]
    compute = _effective_compute_dtype(s.compute_dtype, device)
    prep = FramePreprocessor(s.target_width, s.mode, cfg.patch_size)
    crop = prep.plan(read_frame(frames[0]).shape[:2])
    _check_frame_sizes(frames, tuple(crop.orig_hw))
    scene = build_scene_meta(backbone, frames, crop, layers, s, compute)

    # refuse to mix runs with different settings in one folder
    meta_path = tokens_dir / META_FILE
    if meta_path.is_file() and not s.overwrite:
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None:
            diffs = describe_mismatch(old, {f: scene[f] for f in RUN_FIELDS}, skip_none=False)
            if diffs:
                raise TokenCacheError(
                    f"{meta_path}: this folder holds tokens extracted with other settings ({'; '.join(diffs)}). "
                    "Fix: pass --overwrite to re-extract with the new settings, or use the old settings to "
                    "resume, or choose another --out folder")
    write_scene_meta(tokens_dir, scene)

    # which frames need (re)writing
    needs = []
    for f in frames:
        path = tokens_dir / f"{f.key}{SUFFIX}"
        if s.overwrite or not path.exists():
            needs.append(True)
            continue
        reason = check_frame_file(path, scene, f.key, f.index, require_full_history=s.resume_replay == "full")
        if reason is None and s.verify:
            try:
                verify_token_file(path)
            except TokenCacheError as e:
                reason = str(e)
        if reason is not None:
            logger.warning("will rewrite %s", reason)
        needs.append(reason is not None)
    todo = [i for i, n in enumerate(needs) if n]
    t_start = time.perf_counter()
    if not todo:
        write_scene_meta(tokens_dir, {**scene, "complete": True})
        logger.info("%s: all %d frames already extracted", tokens_dir, len(frames))
        return ExtractionReport(tokens_dir, len(frames), 0, len(frames), 0, 0.0, 0)
    first, last = todo[0], todo[-1]
    # whole chunks only, aligned to multiples of chunk_size from frame 0: the same computation in every run
    end = min((last // s.chunk_size + 1) * s.chunk_size, len(frames))
    start = 0
    if not backbone.streaming:  # windows are independent: replay only the window before (its overlap frames)
        start = max(0, (first // s.chunk_size - 1) * s.chunk_size)
    elif s.resume_replay == "window" and s.window is not None:
        start = (max(0, first - s.window) // s.chunk_size) * s.chunk_size
    history = "full" if start == 0 or not backbone.streaming else "window"
    if start > 0 and backbone.streaming:
        logger.warning("resuming at frame %d with a replay of frames %d..%d only (--resume-replay window): "
                       "tokens from here on are approximate (marked history=window)", first, start, first - 1)
    elif first > 0:
        logger.info("resuming at frame %d: replaying frames 0..%d through the backbone (not rewritten)",
                    first, first - 1)

    if backbone.streaming:
        cache = backbone.aggregator.new_cache(s.window)
        cache.num_frames_seen = start  # frame indices (special tokens, window) continue from `start`
    else:
        from model.vggt.windows import WindowedRunner

        runner = WindowedRunner(backbone.model, s.window, s.overlap, layers=layers, heads=())
    written = replayed = nbytes = 0
    bar = tqdm(total=end - start, unit="frame", desc=desc, disable=not s.progress, dynamic_ncols=True)
    reader = iter_frames(frames[start:end])
    try:
        for c0 in range(start, end, s.chunk_size):
            c1 = min(c0 + s.chunk_size, end)
            imgs = []
            for _ in range(c0, c1):
                ref, rgb = next(reader)
                if tuple(rgb.shape[:2]) != tuple(crop.orig_hw):
                    raise _frame_size_error(ref, tuple(rgb.shape[:2]), tuple(crop.orig_hw))
                imgs.append(prep.prepare(rgb)[0])
            images = torch.stack(imgs)[None].to(device)
            with torch.inference_mode(), autocast(device, resolve_dtype(compute)):
                if backbone.streaming:
                    out = [t[0] if t is not None else None for t in backbone.aggregator(images, cache)[0]]
                else:
                    out = runner.step(images[0])["tokens"]
            picked = [out[li].float() for li in layers]  # each (S, P, 2C)
            del out
            for j, i in enumerate(range(c0, c1)):
                if not needs[i]:  # replayed (before the first frame to write) or already valid
                    replayed += 1
                    bar.update(1)
                    continue
                toks = [t[j] for t in picked]
                if not all(bool(torch.isfinite(t).all()) for t in toks):
                    raise FloatingPointError(f"frame {frames[i].key} ({frames[i].path}): the backbone produced "
                                             "NaN/inf tokens; try --compute-dtype fp32")
                scales = None
                if s.dtype == "int8":  # on the CPU, from fp32: the same bytes whatever the device
                    try:
                        stored, scales = map(list, zip(*(quantize_int8(t.cpu()) for t in toks), strict=True))
                    except FloatingPointError as e:
                        raise FloatingPointError(f"frame {frames[i].key}: {e}") from None
                else:
                    stored = [t.to(store_dtype).cpu() for t in toks]
                    if not all(bool(torch.isfinite(t).all()) for t in stored):
                        raise FloatingPointError(f"frame {frames[i].key}: tokens overflow {s.dtype}; use --dtype "
                                                 "bf16 or --dtype fp32")
                path = tokens_dir / f"{frames[i].key}{SUFFIX}"
                write_token_file(path, stored, layers, frame_meta_for(scene, frames[i].key, i, history),
                                 scales=scales)
                nbytes += path.stat().st_size
                written += 1
                bar.update(1)
            bar.set_postfix_str("replay" if c1 <= first else "write")
    except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: every file on disk is complete (atomic writes)
        kept = len(frames) - len(todo) + written
        raise interrupted(e, f"{kept} of {len(frames)} frames kept", tokens_dir,
                          "re-run the same command to resume (it gives the bytes of an uninterrupted run)") from None
    finally:
        bar.close()
        reader.close()
    write_scene_meta(tokens_dir, {**scene, "complete": True})  # every frame was valid or has been written
    secs = time.perf_counter() - t_start
    return ExtractionReport(tokens_dir, len(frames), written, len(frames) - written, replayed, secs, nbytes)


# --------------------------------------------------------------------------------------------- CLI
def _window_arg(text: str) -> int | None:
    if text.lower() in ("none", "all", "inf"):
        return None
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("window must be >= 0, or 'none' for unbounded")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m preprocess.extract_tokens",
        description="Extract frozen StreamVGGT geometry tokens (streaming, resumable) into <scene>/tokens/: "
                    "one safetensors file per frame with the decoder's layers, plus tokens/meta.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", type=Path,
                   help="a frame folder (HyperNeRF <scene>/rgb/2x, Neu3D <scene>/camXX/images), a video file "
                        "(mp4/avi/mov, read with OpenCV; keys 000001..), a scene folder, or a dataset root")
    p.add_argument("--scenes", nargs="+", default=None,
                   help="with a dataset root: the scene folder names to extract (default: every scene in it)")
    p.add_argument("--cameras", nargs="+", default=None,
                   help="Neu3D: camera folders to extract (e.g. cam00); default: all camXX/images")
    p.add_argument("--frames-subdir", default="rgb/2x", help="HyperNeRF frame folder inside a scene")
    p.add_argument("--out", type=Path, default=None,
                   help="tokens folder for a single input (default: <scene>/tokens, <scene>/camXX/tokens, "
                        "or <video dir>/<video stem>/tokens)")
    p.add_argument("--backbone", default="streamvggt",
                   help=backbone_help() + "; the same specification as inference.run --backbone")
    p.add_argument("--checkpoint", default=None,
                   help="weights file/folder or Hugging Face repo id; default ckpt/streamvggt/checkpoints.pth, "
                        "else the Hub repo lch01/StreamVGGT")
    p.add_argument("--seed", type=int, default=0, help="seed of the random --backbone tiny")
    add_device_arg(p)
    p.add_argument("--dtype", choices=sorted(STORAGE_DTYPES), default="fp16",
                   help="storage precision of the tokens (fp16 halves the size; bf16 if fp16 overflows; int8: one "
                        "byte per value with a fp16 scale per token row, max|x|/127, error <= scale/2, about "
                        "half the size of fp16, read back as float32)")
    add_compute_dtype_arg(p, "fp32", "backbone precision (autocast, CUDA only; fp32 on CPU)")
    add_chunk_size_arg(p, DEFAULT_CHUNK,
                       "frames per backbone call (block-causal within a chunk: the same tokens as 1 up to "
                       "rounding; each frame attends to its own slice of the cache, so chunks do no masked "
                       "work). Larger chunks batch the per-frame layers (faster, more activation memory). "
                       "Recorded in the metadata: resume with the same")
    p.add_argument("--window", type=_window_arg, default=DEFAULT_WINDOW,
                   help="StreamVGGT: max past frames each frame attends to (KV cache size; the published "
                        "extraction uses 128); 'none' = unbounded (memory grows with the video). Windowed backbones "
                        "(vggt, page4d): frames per global-attention window (memory grows with its square; see the "
                        "README's Backbones table)")
    p.add_argument("--overlap", type=int, default=4,
                   help="windowed backbones only: frames each window shares with the one before (their tokens "
                        "come from the earlier window; --chunk-size is then window - overlap)")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="aggregator layers to store (default: the backbone's DPT layers, 4 11 17 23; tiny 0 1 2 3)")
    p.add_argument("--target-width", type=int, default=518,
                   help="network input width (multiple of 14); with --mode pad the longer side")
    p.add_argument("--mode", choices=MODES, default="resize",
                   help="resize: width -> target, height rounded to a multiple of 14, nothing cropped (the whole "
                        "frame is seen); crop: the same, but centre-cropped to a square if taller (the published "
                        "StreamVGGT crop); pad: longer side -> target, white-padded square; native: no resize, centre-crop "
                        "to multiples of 14. Never rotates; the mapping is stored in the metadata")
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite every frame (needed to change settings of an existing tokens folder)")
    p.add_argument("--resume-replay", choices=("full", "window"), default="full",
                   help="when resuming at frame k: replay frames 0..k-1 (exact, byte-identical to an "
                        "uninterrupted run) or only the last --window frames (faster, approximate)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="check the SHA-256 of the tensor bytes of existing files before keeping them on a resume "
                        "(reads them all; header, tensor names, shapes, dtypes and metadata are always checked)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_logging_args(p, log_level=True)
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    settings = ExtractionSettings(
        layers=args.layers, dtype=args.dtype, compute_dtype=args.compute_dtype, chunk_size=args.chunk_size,
        window=args.window, target_width=args.target_width, mode=args.mode, overwrite=args.overwrite,
        resume_replay=args.resume_replay, verify=args.verify, progress=not args.no_progress,
        overlap=args.overlap)
    jobs = discover_jobs(args.input, args.scenes, args.cameras, args.out, args.frames_subdir)
    device = resolve_device(args.device)
    rank, world = rank_and_world()
    if device.type == "cuda" and world > 1 and device.index is None:
        device = torch.device("cuda", local_device_index())  # torchrun: one GPU per local rank
    mine = my_share(jobs)
    if world > 1:
        logger.info("rank %d of %d: %d of %d videos", rank, world, len(mine), len(jobs))
    backbone = load_aggregator(args.backbone, args.checkpoint, args.seed, device)
    for job in mine:
        frames = list_frames(job.source)
        rep = extract_tokens(backbone, frames, job.tokens_dir, settings, device, desc=job.name)
        print(f"{job.name}: {rep.num_frames} frames -> {rep.tokens_dir} (written {rep.written}, skipped "
              f"{rep.skipped}, replayed {rep.replayed}; {rep.frames_per_s:.2f} frames/s; "
              f"{rep.bytes_written / max(rep.written, 1) / 1e6:.2f} MB/frame; backbone {backbone.id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
