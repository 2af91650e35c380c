"""Inference entry point: ``python -m inference.run --source <frames|scene|video.mp4> --decoder <ckpt> --out <dir>``.

The backbone streams the frames once (windowed cache, chunks of ``--chunk-size`` frames), or the cached tokens of
``<scene>/tokens`` are read when they exist; the trained decoder predicts every frame's small/middle/large
feature fields, mapped back to the ORIGINAL frame resolution and saved losslessly (safetensors) with PCA
pictures and the RGB reconstruction; the backbone's heads give depth + confidence and cameras, exported as
per-frame and fused binary PLY point clouds. See :mod:`inference.outputs` for the layout. CPU or GPU.

``--preset published`` reproduces the published 4DLangVGGT inference path with its head (``--decoder
checkpoint_epoch_100.pth``): frames listed by a plain sort of their names and read as published (RGBA on white),
preprocessing ``original`` (landscape frames turned 90 degrees counter-clockwise, centre crop to multiples of 14,
no resize), streamed frame by frame in fp32 with a 120-frame cache and no token cache, and the head's bilinear
stretch onto the turned frame; the fields are then turned back onto the original pixels.
``--published-png`` also writes the published picture layout under ``<out>/published/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from inference.config import WINDOWED_WINDOW, InferConfig, apply_preset
from inference.outputs import AUTOENCODER_DIR, LEVELS, VIDEO_AUTOENCODER_DIR
from inference.pipeline import Frame, InferenceSettings, run_inference
from utils.cli import UserError, add_dataclass_args, cli_main, dataclass_from_args, setup_logging_from
from utils.device import resolve_device, resolve_dtype

log = logging.getLogger("inference.run")


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`inference.config.InferConfig` (one flag per field)."""
    p = argparse.ArgumentParser(prog="python -m inference.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(p, InferConfig)
    return p


def parse_config(argv: list[str] | None = None) -> InferConfig:
    """The command's settings from its flags (``argv``; None = ``sys.argv[1:]``), no preset applied yet."""
    return dataclass_from_args(InferConfig, build_parser().parse_args(argv))


def check_backbones(decoder, cache, backbone_id: str | None, decoder_path: str) -> None:
    """Refuse a token cache or a ``--backbone`` other than the backbone the decoder was trained on (when the
    decoder records it), and a cache made by another backbone than ``--backbone``."""
    trained = (getattr(decoder, "source_info", {}).get("token_info") or {}).get("backbone")
    cached = cache.meta.get("backbone") if cache is not None else None
    if trained and cached and trained != cached:
        raise UserError(f"the token cache was made by backbone {cached} but the decoder was trained on tokens of "
                        f"{trained}", cache.dir, "re-extract the tokens with the decoder's backbone, or pass "
                        "--no-tokens --backbone <that backbone>")
    if trained and backbone_id and trained != backbone_id:
        raise UserError(f"--backbone is {backbone_id} but the decoder was trained on tokens of {trained}",
                        decoder_path, "pass the backbone the decoder was trained with")
    if cached and backbone_id and cached != backbone_id:
        raise UserError(f"the token cache was made by backbone {cached} but --backbone is {backbone_id}", cache.dir,
                        "pass the backbone the cache was made with, or --no-tokens to stream with this one")


def read_autoencoder(source: str):
    """The autoencoder at ``source`` (our folder or a LangSplat .pth), read before any output is written: an
    unreadable one is one :class:`UserError`."""
    from model.autoencoder import FeatureAutoencoder
    from utils.cli import require_path

    require_path(source, "autoencoder", "pass the autoencoder folder written by preprocess.train_autoencoder")
    try:
        return FeatureAutoencoder.load(source)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise UserError(f"cannot read the autoencoder ({e})", source,
                        "pass the folder written by preprocess.train_autoencoder or a LangSplat .pth") from None


def autoencoder_entries(source: str, name: str = AUTOENCODER_DIR) -> dict[str, str]:
    """The metadata entries that record the autoencoder copied into ``<out>/<name>/`` (our folder format, a few
    hundred kB, so the fields folder can be queried, evaluated and moved on its own)."""
    return {name: name, f"{name}_source": str(Path(source).resolve())}


def checked_frames(frames: Iterator[tuple]) -> Iterator[tuple]:
    """Pass (ref, rgb) through, refusing a frame whose size differs from the first one's (every frame of a video
    shares the streaming context, the network grid and the token cache's crop)."""
    first: tuple[int, int] | None = None
    for ref, rgb in frames:
        hw = tuple(rgb.shape[:2])
        if first is None:
            first = hw
        elif hw != first:
            from preprocess.frames import FrameSourceInvalid

            raise FrameSourceInvalid(f"frame {ref.key} is {hw[1]}x{hw[0]} but the first frame is "
                                     f"{first[1]}x{first[0]}", ref.path, "every frame of a video must have one size")
        yield ref, rgb


def _usable_cache(cache, refs, decoder, backbone_spec: str | None):
    """The cache if it holds a valid file for every frame to process, else None (stream through the backbone).

    Tokens depend on every earlier frame of the stream, so a cache is used for all frames or none: mixing cached
    frames with freshly streamed ones would restart the backbone's context mid-video.
    """
    from preprocess.token_cache import TokenCacheError

    try:
        cache.validate(layers=list(decoder.config.layers), token_dim=decoder.config.dim_in,
                       keys=[r.key for r in refs], check_files=True)
    except TokenCacheError as e:
        if backbone_spec is None:
            raise TokenCacheError(f"{e}; the token cache must hold every frame, else pass --backbone to stream "
                                  "the frames instead") from None
        log.warning("not using the token cache (%s); streaming every frame through the backbone instead", e)
        return None
    return cache


def open_token_cache(cfg: InferConfig, source: Path, decoder) -> object | None:
    """The token cache to read (validated against the decoder), or None."""
    if cfg.no_tokens:
        return None
    from preprocess.token_cache import TokenCache

    if cfg.tokens:
        tdir = Path(cfg.tokens)
    else:
        if source.is_dir():  # scene/, scene/rgb/2x, or a Neu3D scene/camXX/images
            from preprocess.layout import scene_jobs

            jobs = scene_jobs(source)  # the extractor's own folder first (Sintel: training/tokens/<pass>/<seq>)
            candidates = [j.tokens_dir for j in jobs if len(jobs) == 1]
            candidates += [source / "tokens", source.parent.parent / "tokens", source.parent / "tokens"]
        else:  # a video: <video dir>/<video stem>/tokens (the extractor's default)
            candidates = [source.parent / source.stem / "tokens"]
        tdir = next((c for c in candidates if (c / "meta.json").is_file()), None)
        if tdir is None:
            return None
    cache = TokenCache(tdir)
    cache.validate(layers=list(decoder.config.layers), token_dim=decoder.config.dim_in, check_files=False,
                   keys=[])
    log.info("reading cached tokens from %s (%d frames)", tdir, len(cache))
    return cache


def iter_prepared(refs, preprocessor, reader=None) -> Iterator[Frame]:
    """Lazily read and preprocess frames (one at a time); ``reader`` decodes image files (see ``iter_frames``)."""
    from preprocess.frames import iter_frames

    for ref, rgb in checked_frames(iter_frames(refs, reader)):
        image, info = preprocessor.prepare(rgb)
        yield Frame(key=ref.key, index=ref.index, rgb=rgb, image=image, crop=info)


def list_source_frames(source: Path, published: bool):
    """The frames to process: our natural-sorted listing, or the published plain-sorted one."""
    from preprocess.frames import list_frames, list_frames_published

    try:
        if published and not source.is_file():
            return list_frames_published(source)
        return list_frames(source)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UserError(str(e), source, "pass a frame folder, a scene folder or a video file") from None


def check_one_size(refs, source: Path) -> None:
    """The published loader pads frames of different sizes to the largest and stretches every output to the last
    frame's size, which maps onto no frame's pixels: refuse such a video for the published preset."""
    from preprocess.frames import image_size

    sizes: dict[tuple[int, int], str] = {}
    for ref in refs:
        if ref.is_video:
            return
        try:
            h, w = image_size(ref.path)  # as displayed (EXIF orientation), as the frame reader reads it
            sizes.setdefault((w, h), ref.path.name)
        except OSError as e:
            raise UserError(f"cannot read the frame ({e})", ref.path, "replace or remove the damaged frame") from None
        if len(sizes) > 1:
            (a, fa), (b, fb) = list(sizes.items())[:2]
            raise UserError(f"frames of different sizes ({fa}: {a[0]}x{a[1]}, {fb}: {b[0]}x{b[1]}); the published "
                            "path pads them and stretches every output to the last frame's size, which fits no "
                            "frame", source, "resize the frames to one size, or run without --preset published")


def expand_sources(sources: list[str]) -> list[tuple[Path, str | None]]:
    """(source, output sub-folder name) pairs. One video, frame folder or single-video scene writes to ``--out``
    itself; several sources, a dataset root or a multi-camera scene (``preprocess.layout.discover_jobs``) write
    each video to ``--out/<name>``."""
    from preprocess.layout import discover_jobs

    if len(sources) == 1:
        jobs = discover_jobs(sources[0])
        if len(jobs) == 1:
            return [(Path(sources[0]), None)]
        return [(job.source, job.name) for job in jobs]
    paths = [Path(s) for s in sources]
    for p in paths:
        discover_jobs(p)  # a clear error for a missing or unusable source, before anything runs
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        raise UserError(f"several sources share a name ({sorted({n for n in names if names.count(n) > 1})})", None,
                        "give sources with distinct folder / file names (each writes to --out/<name>)")
    return [(p, p.stem) for p in paths]


def load_networks(decoder_path: str | None, backbone_spec: str | None, device: torch.device,
                  preset: str = "default") -> tuple[torch.nn.Module | None, torch.nn.Module | None, str | None]:
    """(decoder or None, backbone or None, backbone identity or None), loaded once for every source: the decoder by
    ``model.decoder_io.from_pretrained`` (any ``--decoder`` path or a Hub repo id; None: ``--geometry-only``), the
    backbone by ``model.backbones.load_backbone``; the published preset refuses a decoder of ours."""
    from model.decoder_io import decoder_kind, from_pretrained

    backbone, backbone_id = None, None
    if backbone_spec:
        from model.backbones import load_backbone

        backbone, backbone_id, _ = load_backbone(backbone_spec, device=device)
    if decoder_path is None:
        return None, backbone, backbone_id
    layers = tuple(backbone.config.dpt_layers) if backbone is not None else None
    decoder = from_pretrained(decoder_path, device=device, layers=layers)
    if preset == "published" and decoder_kind(decoder) != "published":
        raise UserError("--preset published runs the published head, but this decoder is one of ours", decoder_path,
                        "pass the published checkpoint_epoch_100.pth (or a decoder trained with --decoder "
                        "published), or drop --preset")
    return decoder, backbone, backbone_id


@cli_main
def main(argv: list[str] | None = None) -> dict | list[dict]:
    cfg = parse_config(argv)
    setup_logging_from(cfg)
    apply_preset(cfg)
    from utils.ranks import local_device_index, my_share, rank_and_world

    device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.compute_dtype)
    if device.type == "cuda" and rank_and_world()[1] > 1 and device.index is None:
        device = torch.device("cuda", local_device_index())  # torchrun: one GPU per local rank
    jobs = expand_sources(cfg.source)
    if len(jobs) > 1 and cfg.tokens:
        raise UserError("--tokens names one token cache but there are several sources", cfg.tokens,
                        "drop --tokens: each scene's own <scene>/tokens is used")
    decoder, backbone, backbone_id = load_networks(cfg.decoder, cfg.backbone, device, cfg.preset)
    mine = my_share(jobs)
    if len(mine) < len(jobs):
        log.info("rank %d of %d: %d of %d sources", *rank_and_world(), len(mine), len(jobs))
    summaries = []
    for source, name in mine:
        out = Path(cfg.out) / name if name else Path(cfg.out)
        summaries.append(run_source(cfg, source, out, decoder, backbone, backbone_id, device, dtype))
    return summaries[0] if len(jobs) == 1 and summaries else summaries


def run_source(cfg: InferConfig, source: Path, out: Path, decoder, backbone, backbone_id: str | None,
               device: torch.device, dtype: torch.dtype) -> dict:
    """Inference on one video / frame folder / scene into ``out``."""
    from model.decoder_io import decoder_kind
    from preprocess.crop import FramePreprocessor
    from preprocess.frames import read_frame_published

    published = cfg.preset == "published"
    refs = list_source_frames(source, published)
    if cfg.max_frames:
        refs = refs[: cfg.max_frames]
    if published:
        check_one_size(refs, source)
    cache = open_token_cache(cfg, source, decoder)  # None with --geometry-only (no_tokens)
    geometry = not cfg.no_geometry
    if cache is None and backbone is None:
        raise UserError("no token cache found and no --backbone given", source,
                        "pass --backbone (e.g. ckpt/streamvggt/checkpoints.pth) or --tokens <dir>")
    if geometry and backbone is None:
        log.warning("no --backbone: geometry (depth, cameras, point clouds) is skipped")
        geometry = False
    check_backbones(decoder, cache, backbone_id, cfg.decoder)
    if cache is not None:
        cache = _usable_cache(cache, refs, decoder, cfg.backbone)
    crop = cache.crop if cache is not None else {}
    trained = (getattr(decoder, "source_info", {}).get("token_info") or {}).get("preprocess") or {}
    patch_size = decoder.config.patch_size if decoder is not None else backbone.config.patch_size
    width = (cfg.target_width or (crop.get("resized_hw", [None, 518])[1] if crop else None)
             or trained.get("target_width") or 518)
    mode = cfg.mode or crop.get("mode") or trained.get("mode") or "resize"
    if trained and not published:
        if trained.get("mode") and mode != trained["mode"]:
            log.warning("preprocessing mode %s, but the decoder was trained on %s tokens: the fields may be worse",
                        mode, trained["mode"])
        if trained.get("target_width") and mode not in ("native", "original") and \
                int(width) != int(trained["target_width"]):
            log.warning("network width %s, but the decoder was trained at width %s: the fields may be worse",
                        width, trained["target_width"])
    preprocessor = FramePreprocessor(target_width=int(width), mode=mode, patch_size=patch_size)
    if cache is not None:
        first = preprocessor.plan(_frame_hw(refs[0]))
        if first.to_dict()["box"] != crop.get("box") or list(first.orig_hw) != list(crop.get("orig_hw", [])):
            raise UserError(f"the token cache was extracted with crop {crop} but these frames give "
                            f"{first.to_dict()}", cache.dir, "pass matching --target-width/--mode or --no-tokens")

    from inference.predictor import LangVGGTPredictor

    chunk, window = cfg.chunk_size, cfg.window
    if backbone is not None and not getattr(backbone, "streaming", True):
        window = cfg.window if cfg.window_given else WINDOWED_WINDOW
        if not 1 <= cfg.overlap < window:
            raise UserError(f"--overlap {cfg.overlap} must be >= 1 and below --window {window}", None,
                            "e.g. --window 32 --overlap 4")
        chunk = window - cfg.overlap  # each window: `overlap` frames of the one before + the new chunk
    predictor = LangVGGTPredictor(decoder, backbone, cache, window=window, geometry=geometry,
                                  device=device, dtype=dtype, fields_on_frame=published, overlap=cfg.overlap)
    preprocess_meta = {"mode": mode} if published else {"target_width": int(width), "mode": mode}
    settings = InferenceSettings(
        chunk=chunk, levels=LEVELS, geometry=geometry, fields=decoder is not None,
        pca=not cfg.no_pca and decoder is not None, rgb=not cfg.no_rgb and decoder is not None,
        video=cfg.video, fps=cfg.fps, conf_percentile=cfg.conf_percentile, min_conf=cfg.min_conf,
        point_stride=cfg.point_stride, fused_max_points=cfg.fused_max_points, overwrite=cfg.overwrite,
        published_png=cfg.published_png,
        extra_meta={"source": str(source), "decoder": decoder.source_info["path"] if decoder is not None else None,
                    "decoder_kind": decoder_kind(decoder) if decoder is not None else None, "preset": cfg.preset,
                    "backbone": cfg.backbone, "backbone_id": backbone_id, "autoencoder": cfg.autoencoder,
                    "tokens": str(cache.dir) if cache is not None else None,
                    "preprocess": preprocess_meta, "window": window, "device": device.type})
    reader = read_frame_published if published else None
    copies = {name: (src, read_autoencoder(src)) for name, src in
              ((AUTOENCODER_DIR, cfg.autoencoder), (VIDEO_AUTOENCODER_DIR, cfg.video_autoencoder)) if src}
    for name, (src, _) in copies.items():
        settings.extra_meta.update(autoencoder_entries(src, name))
    settings.provenance = {
        "decoder": _resolved(decoder.source_info["path"]) if decoder is not None else None,
        "decoder_kind": settings.extra_meta["decoder_kind"], "preset": cfg.preset, "backbone": backbone_id,
        "tokens": _resolved(cache.dir) if cache is not None else None, "preprocess": preprocess_meta,
        "window": window, **{name: settings.extra_meta[f"{name}_source"] for name in copies}}

    def setup(root: Path) -> None:  # under the folder's lock, after the check of its recorded run
        for name, (_, autoencoder) in copies.items():
            autoencoder.save(root / name)

    return run_inference(iter_prepared(refs, preprocessor, reader), len(refs), predictor, out, settings,
                         keys=[r.key for r in refs], setup=setup)


def _resolved(path) -> str | None:
    """An existing file or folder as an absolute path (the same whatever the working folder); other names (a
    built-in preset such as ``published-tiny``) as given."""
    if path is None:
        return None
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _frame_hw(ref) -> tuple[int, int]:
    from preprocess.frames import read_frame

    return tuple(read_frame(ref).shape[:2])


if __name__ == "__main__":
    result = main()
    print(json.dumps(result, indent=2))
    sys.exit(0)
