"""The configuration of an inference run: :class:`InferConfig`, the one source of ``python -m inference.run``'s
flags and of the keyword options of the Python API's ``LangVGGT4D.predict``.

Each field is one flag: its type, its default and its help (``metadata=utils.cli.option(...)``, from which
``inference.run.build_parser`` generates the command line, in field order); the flags every command shares
(``--chunk-size``, ``--device``, ``--compute-dtype``, the messages) name their ``utils/cli.py`` helper, which
declares them. :func:`apply_preset` fills what the command line left unset (``--preset``) and checks the
combinations; the code below the command line (``inference.run.run_source``) takes the filled config.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from model.backbones import backbone_help
from preprocess.crop import MODES, PUBLISHED_MODE
from utils.cli import (
    UserError,
    add_chunk_size_arg,
    add_compute_dtype_arg,
    add_device_arg,
    add_logging_args,
    dataclass_from_options,
    option,
)

#: what ``--preset published`` sets (the published ``inference.py --do_render`` path)
PUBLISHED_PRESET = {"mode": PUBLISHED_MODE, "window": 120, "chunk_size": 1, "compute_dtype": "fp32"}
#: what the default preset fills in when the flag is not given
DEFAULT_PRESET = {"window": 128, "chunk_size": 8, "compute_dtype": "fp32"}
#: frames per global-attention window of a windowed backbone (vggt, page4d) when ``--window`` is not given
WINDOWED_WINDOW = 32

log = logging.getLogger("inference.run")

_chunk_size = functools.partial(
    add_chunk_size_arg, default=None, old_spelling=True,
    help="frames per backbone/decoder pass (memory vs speed); default 8 (published preset: 1)")
_compute_dtype = functools.partial(
    add_compute_dtype_arg, default=None, old_spelling=True,
    help="fp32 (default), fp16 or bf16 (reduced precision only on CUDA; the published preset is fp32)")


@dataclass
class InferConfig:
    """Everything ``python -m inference.run`` is told (one field per flag, in ``--help`` order)."""

    source: list[str] = field(default_factory=list, metadata=option(
        "frames folder (rgb/2x), scene folder, or a video file (.mp4 ...); several sources, or a dataset root (a "
        "folder of scenes / videos), write to --out/<name> each; under `torchrun --nproc_per_node=N -m "
        "inference.run ...` every process takes every N-th source", required=True, nargs="+"))
    decoder: str | None = field(default=None, metadata=option(
        "trained decoder: a checkpoint_epoch_<N>/ folder, a training run folder (uses 'last'), a decoder "
        ".safetensors, or the published 4DLangVGGT checkpoint_epoch_100.pth; required unless --geometry-only"))
    geometry_only: bool = field(default=False, metadata=option(
        "run only the backbone's depth and camera heads, no decoder (drop --decoder; needs --backbone): writes "
        "geometry/ (depth, cameras.json, point clouds, PAGE-4D's dynamic masks) and meta.json, no fields; what "
        "python -m eval.geometry scores, e.g. to compare backbones without training a decoder for each"))
    preset: str = field(default="default", metadata=option(
        "'published': reproduce the published 4DLangVGGT inference path exactly (published head, frames read and "
        "turned as published, preprocessing 'original', fp32 frame-by-frame streaming with a 120-frame cache, no "
        "token cache); fields are turned back onto the original pixels", choices=["default", "published"]))
    published_png: bool = field(default=False, metadata=option(
        "also write the published picture layout: <out>/published/lang/{small,middle,large}/00001.png and "
        "published/rgb/00001.png (uint8 = clamp(x*255+0.5), turned frames stay turned), for diffing against the "
        "published release"))
    out: str = field(default="", metadata=option(
        "output folder (created; rerunning resumes and skips done frames)", required=True))
    backbone: str | None = field(default=None, metadata=option(
        backbone_help() + "; needed for geometry and for frames without cached tokens"))
    tokens: str | None = field(default=None, metadata=option(
        "token cache folder; default <scene>/tokens when it exists (use --no-tokens to ignore it)"))
    no_tokens: bool = field(default=False, metadata=option("never read cached tokens; run the backbone"))
    autoencoder: str | None = field(default=None, metadata=option(
        "autoencoder that decodes the fields to CLIP space: copied into <out>/autoencoder/ so the output folder "
        "can be queried and evaluated on its own"))
    video_autoencoder: str | None = field(default=None, metadata=option(
        "autoencoder of the time-sensitive field (when the decoder has a video head): copied into "
        "<out>/video_autoencoder/"))
    chunk_size: int | None = field(default=None, metadata=option(shared=_chunk_size))
    window: int | None = field(default=None, metadata=option(
        "StreamVGGT: past frames kept in the streaming caches (bounds memory on long videos); default 128 "
        "(published preset: 120, the published cache rule). Windowed backbones (vggt, page4d): frames per "
        "global-attention window, default 32 (memory: README, Backbones)"))
    overlap: int = field(default=4, metadata=option(
        "windowed backbones: frames each window shares with the one before; their cameras and depth give the "
        "Sim(3) that joins the windows (--chunk-size is then window - overlap)"))
    target_width: int | None = field(default=None, metadata=option(
        "network input width (multiple of 14); default: the token cache's, else the width the decoder was trained "
        "at (recorded in its checkpoint), else 518; another one is warned about"))
    mode: str | None = field(default=None, metadata=option(
        "preprocessing mode (see preprocess.extract_tokens --help); default: the token cache's, else the decoder's "
        "training mode, else resize (the published preset uses its own 'original' mode); another one is warned "
        "about", choices=MODES))
    device: str = field(default="auto", metadata=option(shared=add_device_arg))
    compute_dtype: str | None = field(default=None, metadata=option(shared=_compute_dtype))
    max_frames: int | None = field(default=None, metadata=option("only the first N frames (debugging)"))
    no_geometry: bool = field(default=False, metadata=option("skip depth, cameras and point clouds"))
    no_pca: bool = field(default=False, metadata=option("skip the PCA pictures of the fields"))
    no_rgb: bool = field(default=False, metadata=option("skip the RGB reconstruction pictures"))
    video: bool = field(default=False, metadata=option(
        "also write mp4s of the RGB reconstruction and PCA pictures"))
    fps: float = field(default=10.0, metadata=option("frame rate of the mp4s"))
    conf_percentile: float = field(default=25.0, metadata=option(
        "drop this percentage of each frame's lowest-confidence depth pixels from the point clouds"))
    min_conf: float = field(default=0.0, metadata=option("absolute depth-confidence threshold for points"))
    point_stride: int = field(default=2, metadata=option(
        "keep every N-th pixel (each direction) in the point clouds"))
    fused_max_points: int = field(default=2_000_000, metadata=option("vertex budget of geometry/fused.ply"))
    overwrite: bool = field(default=False, metadata=option(
        "recompute frames that are already written (without it a rerun resumes, and refuses a folder made with "
        "another decoder, backbone, autoencoder or per-frame setting: meta.json's 'run')"))
    # messages (utils.cli.add_logging_args)
    quiet: bool = field(default=False, metadata=option(shared=add_logging_args))
    verbose: bool = field(default=False, metadata=option(shared=add_logging_args))
    debug: bool = field(default=False, metadata=option(shared=add_logging_args))
    #: set by :func:`apply_preset`: whether ``--window`` was given (a windowed backbone's window is otherwise
    #: :data:`WINDOWED_WINDOW`, not the streaming cache's preset length); not a flag
    window_given: bool = field(default=True, init=False, repr=False, compare=False)

    @classmethod
    def from_options(cls, options: dict[str, Any], exclude: tuple[str, ...] = (),
                     caller: str = "options") -> InferConfig:
        """The config from keyword options named after the flags (``chunk_size=4``, ``no_geometry=True``), read as
        the command line reads them (:func:`utils.cli.dataclass_from_options`): an unknown name (or one in
        ``exclude``) raises :class:`utils.cli.OptionError` listing the valid ones. No preset is applied."""
        return dataclass_from_options(cls, options, exclude=exclude, caller=caller)


def check_outputs(cfg: InferConfig) -> None:
    """``--decoder`` or ``--geometry-only`` (with a backbone, geometry and no flag that needs fields), one line
    each when not."""
    if not cfg.geometry_only:
        if not cfg.decoder:
            raise UserError("--decoder is required", None, "pass the trained decoder, or --geometry-only (with "
                            "--backbone) for depth and cameras alone")
        return
    clash = [flag for flag, on in (("--decoder", cfg.decoder), ("--no-geometry", cfg.no_geometry),
                                   ("--preset published", cfg.preset == "published"),
                                   ("--published-png", cfg.published_png), ("--autoencoder", cfg.autoencoder),
                                   ("--video-autoencoder", cfg.video_autoencoder), ("--tokens", cfg.tokens),
                                   ("--video", cfg.video)) if on]
    if clash:
        raise UserError(f"--geometry-only runs no decoder and writes no fields, but {', '.join(clash)} was given",
                        None, f"drop {' and '.join(clash)} or --geometry-only")
    if not cfg.backbone:
        raise UserError("--geometry-only needs the backbone's heads", None,
                        "pass --backbone (e.g. vggt:tiny, page4d:ckpt/page4d/checkpoint_nomask.pt)")
    cfg.no_tokens = True  # depth and cameras come from the backbone's heads on the frames


def apply_preset(cfg: InferConfig) -> None:
    """Fill the unset settings from the preset (in place); warn where the command line departs from the published
    path."""
    check_outputs(cfg)
    cfg.window_given = cfg.window is not None
    if cfg.preset != "published":
        for k, v in DEFAULT_PRESET.items():
            if getattr(cfg, k) is None:
                setattr(cfg, k, v)
        return
    if cfg.mode is not None:
        raise UserError(f"--mode {cfg.mode} cannot be combined with --preset published", None,
                        "the published path always uses its 'original' preprocessing; drop --mode")
    if cfg.target_width is not None:
        raise UserError("--target-width cannot be combined with --preset published", None,
                        "the published path does not resize; drop --target-width")
    for k in ("window", "chunk_size", "compute_dtype"):
        value = getattr(cfg, k)
        if value is None:
            setattr(cfg, k, PUBLISHED_PRESET[k])
        elif str(value) != str(PUBLISHED_PRESET[k]):
            log.warning("--%s %s departs from the published path (%s): the fields will differ from the published "
                        "ones", k.replace("_", "-"), value, PUBLISHED_PRESET[k])
    cfg.mode = PUBLISHED_MODE
    cfg.no_tokens = True
