"""Semantic targets in the 4D LangSplat format: ``<scene>/clip_features/`` (and ``video_features/``).

Modes:

- ``oracle`` (synthetic scenes with ``gt/``): regions = the ground-truth label maps; the feature of a region =
  the CLIP *text* embedding of its name. The ``default`` level is the pooled map (per pixel the finest region:
  small over middle over large), as SAM's pooled output in 4D LangSplat. Also writes the time-sensitive
  targets ``video_features/``: ``_s.npy`` (1, H, W) = object index of the large level (-1 background),
  ``_f.npy`` (n_objects, D) = text embedding of each object's state caption at that frame (its name when it
  has no state there). Precomputed E5 ``video_features`` (float64, 4096-d) need no step here: the
  autoencoder trainer reads them as they are.
- ``clip`` (real videos): region proposals at three granularities (``--masks skimage`` default, ``sam``,
  ``precomputed``), default level pooled (or taken from precomputed 4-level masks), features = open_clip
  *image* embeddings of masked square crops (224), batched, on GPU when present.

Output files per frame key: ``_s.npy`` float32 (4, H, W), -1 none, levels offset into one index space;
``_f.npy`` float32 (N, D) unit rows in order default|small|middle|large; plus ``meta.json``. The folder is
built in ``.<name>.partial/`` and renamed at the end (bad input removes it).

Interrupting and re-running: a run killed at any moment and re-run with the same command gives the same bytes as
an uninterrupted run and leaves no temporary file. Finished frames of a ``.partial/`` folder are kept; in oracle
mode a ``clip_features/`` folder finished by the killed run (same mode, text encoder and frames, see its
``meta.json``) is kept while ``video_features/`` is (re)built. Every text (region names, object names, state
captions) is embedded once, up front, in one sorted batch, so the rows do not depend on which frames a resumed run
still had to do. A run whose outputs all exist is refused unless ``--overwrite`` is given. Frames are decoded
completely before anything is written (a zero-byte or truncated frame is refused, naming the file).

Examples::

    python -m preprocess.extract_semantics --scene data/synthetic/demo --mode oracle --clip tiny
    python -m preprocess.extract_semantics --scene data/synthetic/demo --mode oracle --hash-text
    python -m preprocess.extract_semantics --scene data/hypernerf/americano --mode clip \\
        --clip-model ViT-B-16 --clip-pretrained laion2b_s34b_b88k --device auto
"""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.clip import ClipEncoder
from model.text import build_text_encoder, text_encoder_from_options
from preprocess.semantics.crops import region_crops
from preprocess.semantics.levels import assemble, compact, pool_levels
from preprocess.semantics.proposals import PrecomputedProposer, SamProposer, SkimageProposer
from preprocess.semantics.scene import (
    GroundTruth,
    OutputExistsError,
    SemanticsInputError,
    StagedOutput,
    finished_output,
    image_hw,
    iter_rgb,
    list_scene_frames,
)
from preprocess.target_format import PLANES, SEG_SUFFIX, feat_name, seg_name
from utils.cli import (
    UserError,
    add_device_arg,
    add_logging_args,
    add_text_encoder_args,
    cli_main,
    interrupted,
    setup_logging_from,
)
from utils.device import resolve_device
from utils.io import npy_problem, save_json_atomic, save_npy_atomic
from utils.lock import output_lock
from utils.ranks import my_share

logger = logging.getLogger(__name__)

DEFAULT_LEVEL_DOC = "pooled: per pixel the finest region present (small over middle over large)"


class TextCache:
    """Embeds each distinct string once: ``rows(strings) -> float32 (len, D)``."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self.encoder, self.cache = encoder, {}

    def prefill(self, strings) -> None:
        """Embed every string of ``strings`` not cached yet in one sorted batch.

        Text encoders are not batch-invariant to the last bit (a row's value depends on the other rows of the
        batch), so a run embeds all its texts here, up front: a resumed run then gets the same rows as an
        uninterrupted one, whatever frames it still has to do.
        """
        new = sorted({str(s) for s in strings if s not in self.cache})
        if new:
            emb = torch.as_tensor(self.encoder.encode_text(new)).detach().float().cpu().numpy()
            for s, e in zip(new, emb, strict=True):
                self.cache[s] = e

    def rows(self, strings: list[str]) -> np.ndarray:
        self.prefill(strings)
        if not strings:
            return np.zeros((0, self.encoder.embed_dim), np.float32)
        return np.stack([self.cache[s] for s in strings]).astype(np.float32)


def _write_frame(out: StagedOutput, key: str, s: np.ndarray, f: np.ndarray) -> None:
    save_npy_atomic(f, out.path(feat_name(key)))
    save_npy_atomic(s, out.path(seg_name(key)))  # written last: its presence marks the frame as done


def _run_staged(out: StagedOutput, body) -> Path:
    """Run ``body`` (which writes into ``out``) and commit; bad input (a :class:`UserError`) removes the partial
    folder, any other interruption keeps it for resuming."""
    try:
        body()
    except UserError:
        out.abort()
        raise
    except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: finished frames stay in the partial folder
        raise interrupted(e, f"{out.count(SEG_SUFFIX)} finished frames kept", out.partial,
                          "re-run the same command to resume") from None
    return out.commit()


# ---------------------------------------------------------------------- oracle
def extract_oracle(scene: str | Path, encoder: ClipEncoder, overwrite: bool = False, output_name: str = "clip_features",
                   video: bool = True, frames_dir: str | Path | None = None, progress: bool = True) -> dict[str, Path]:
    """Oracle targets of a synthetic scene; returns ``{"clip": folder, "video": folder}`` written.

    ``encoder``: a :class:`ClipEncoder`, or any object with ``encode_text(list[str]) -> (N, D)`` unit rows,
    ``embed_dim`` and ``identity`` (e.g. a weightless hash text encoder for evaluation checks).
    """
    scene = Path(scene)
    frames = list_scene_frames(scene, frames_dir)
    gt = GroundTruth.load(scene)
    video_final = scene / "video_features"
    if video and video_final.exists() and not overwrite:  # refuse before any work, not after the first phase
        raise OutputExistsError(video_final)
    for fr in frames:  # validate everything up front: nothing is written for a broken scene
        gt.labels(fr.key, image_hw(fr.path, decode=True))
    texts = TextCache(encoder)
    # every text either phase needs, embedded in one batch (see TextCache.prefill)
    texts.prefill([r["name"] for r in gt.regions.values()]
                  + [gt.caption(o, fr.index) for fr in frames for o in gt.objects])
    base_cfg = {"mode": "oracle", "clip": encoder.identity, "frames": [f.key for f in frames]}
    written: dict[str, Path] = {}
    clip_final = scene / output_name
    if (video and not overwrite and not video_final.exists()
            and finished_output(clip_final, dict(base_cfg, format="4dlangsplat-clip_features"),
                                [f"{fr.key}_{x}.npy" for fr in frames for x in "sf"])):
        # an earlier run finished this phase with the same settings and was stopped in the time-sensitive one
        logger.info("%s is complete (same mode, encoder and frames): keeping it, building %s", clip_final,
                    video_final.name)
        written["clip"] = clip_final
        written["video"] = extract_oracle_video(scene, encoder, gt, frames, texts, overwrite, progress=progress)
        return written

    out = StagedOutput(clip_final, dict(base_cfg, kind="clip"), overwrite)
    rows_meta: dict[str, list[list[int]]] = {}

    def clip_body() -> None:
        for fr in tqdm(frames, desc="oracle clip_features", unit="frame", disable=not progress):
            lab = gt.labels(fr.key, image_hw(fr.path))
            maps = [pool_levels(lab[0], lab[1], lab[2]), lab[0], lab[1], lab[2]]
            local, feats, ids_per_level = [], [], []
            for m in maps:
                lm, ids = compact(m)
                local.append(lm)
                ids_per_level.append([int(i) for i in ids])
                feats.append(texts.rows([gt.regions[int(i)]["name"] for i in ids]))
            rows_meta[fr.key] = ids_per_level
            if out.has(seg_name(fr.key), feat_name(fr.key)):
                continue
            s, f = assemble(local, feats)
            _write_frame(out, fr.key, s, f)
        save_json_atomic(dict(base_cfg, format="4dlangsplat-clip_features", levels=list(PLANES),
                              default_level=DEFAULT_LEVEL_DOC, embed_dim=encoder.embed_dim,
                              region_names={str(k): v["name"] for k, v in sorted(gt.regions.items())},
                              rows=rows_meta), out.path("meta.json"))

    written["clip"] = _run_staged(out, clip_body)
    if video:
        written["video"] = extract_oracle_video(scene, encoder, gt, frames, texts, overwrite, progress=progress)
    return written


def extract_oracle_video(scene: Path, encoder: ClipEncoder, gt: GroundTruth, frames, texts: TextCache,
                         overwrite: bool = False, output_name: str = "video_features", progress: bool = True) -> Path:
    """Time-sensitive oracle targets: ``_s`` (1, H, W) object index (large level), ``_f`` (n_objects, D)."""
    obj_index = {o: i for i, o in enumerate(gt.objects)}
    region_obj = {}
    for rid, r in gt.regions.items():
        obj = r.get("object", r["name"])
        if obj not in obj_index:
            raise SemanticsInputError(f"{gt.root / 'names.json'}: region {rid} names object {obj!r} that is not in "
                                      f"'objects'")
        region_obj[rid] = obj_index[obj]
    lut_ids = np.array(sorted(region_obj), np.int64)
    lut_obj = np.array([region_obj[i] for i in lut_ids], np.int64)
    out = StagedOutput(scene / output_name, {"mode": "oracle", "kind": "video", "clip": encoder.identity,
                                             "frames": [f.key for f in frames]}, overwrite)
    captions: dict[str, list[str]] = {}

    def body() -> None:
        for fr in tqdm(frames, desc="oracle video_features", unit="frame", disable=not progress):
            caps = [gt.caption(o, fr.index) for o in gt.objects]
            captions[fr.key] = caps
            if out.has(seg_name(fr.key), feat_name(fr.key)):
                continue
            large = gt.labels(fr.key, image_hw(fr.path))[2]
            s = np.full(large.shape, -1.0, np.float32)
            valid = large >= 0
            s[valid] = lut_obj[np.searchsorted(lut_ids, large[valid])]
            _write_frame(out, fr.key, s[None], texts.rows(caps))
        save_json_atomic({"format": "4dlangsplat-video_features", "mode": "oracle", "clip": encoder.identity,
                          "embed_dim": encoder.embed_dim, "objects": gt.objects, "captions": captions},
                         out.path("meta.json"))

    return _run_staged(out, body)


# ---------------------------------------------------------------------- clip mode
def _frame_levels(proposer, image: np.ndarray, key: str) -> list[np.ndarray]:
    maps = proposer(image, key)
    if len(maps) == 3:  # small, middle, large with per-level ids -> make ids unique, then pool
        offs, uniq = 0, []
        for m in maps:
            uniq.append(np.where(m >= 0, m + offs, -1))
            offs += int(m.max()) + 1 if (m >= 0).any() else 0
        maps = [pool_levels(*uniq), *uniq]
    return [compact(m)[0] for m in maps]


def prepare_levels(image: np.ndarray, level_maps: list[np.ndarray],
                   size: int) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """CPU half of :func:`embed_levels`: crops of every region (regions without a usable box removed).

    Returns (compact level maps, uint8 crops (M, S, S, 3) in level order, region count per level).
    """
    final_maps, crops_all, counts = [], [], []
    for m in level_maps:
        kept, crops = region_crops(image, m, size)
        # regions without a usable box are removed from the map, the rest re-indexed 0..k-1
        lut = np.full(int(m.max()) + 2 if (m >= 0).any() else 1, -1, np.int64)
        lut[kept] = np.arange(kept.size)
        final_maps.append(np.where(m >= 0, lut[np.maximum(m, 0)], -1))
        crops_all.append(crops)
        counts.append(kept.size)
    return final_maps, np.concatenate(crops_all), counts


def _encode_prepared(prepared, encoder: ClipEncoder, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    final_maps, crops, counts = prepared
    feats = encoder.encode_image(crops, batch_size=batch_size).numpy() if len(crops) else \
        np.zeros((0, encoder.embed_dim), np.float32)
    return assemble(final_maps, np.split(feats, np.cumsum(counts)[:-1]))


def embed_levels(image: np.ndarray, level_maps: list[np.ndarray], encoder: ClipEncoder,
                 batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Crops + CLIP image embeddings of every region of four compact level maps -> (``_s``, ``_f``)."""
    return _encode_prepared(prepare_levels(image, level_maps, encoder.image_size), encoder, batch_size)


def extract_clip(scene: str | Path, encoder: ClipEncoder, proposer, overwrite: bool = False,
                 output_name: str = "clip_features", batch_size: int = 64, masks: str = "skimage",
                 frames_dir: str | Path | None = None, progress: bool = True) -> Path:
    """CLIP-image targets of a real (or synthetic) video; returns the written folder."""
    scene = Path(scene)
    frames = list_scene_frames(scene, frames_dir)
    if isinstance(proposer, PrecomputedProposer):
        missing = [str(proposer.path(f.key)) for f in frames if not proposer.path(f.key).is_file()]
        if missing:
            raise SemanticsInputError(f"{len(missing)} precomputed masks are missing, e.g. {missing[0]}")
        for fr in frames:  # a mask that is not a complete plain .npy is refused before anything is written
            problem = npy_problem(proposer.path(fr.key))
            if problem is not None:
                raise SemanticsInputError(f"precomputed mask: {problem}", proposer.path(fr.key),
                                          "write it again with np.save(..., allow_pickle=False)")
    for fr in frames:  # a zero-byte or truncated frame is refused before anything is written
        if not (fr.ref is not None and fr.ref.is_video):
            image_hw(fr.path, decode=True)
    cfg = {"mode": "clip", "masks": masks, "clip": encoder.identity, "frames": [f.key for f in frames]}
    out = StagedOutput(scene / output_name, cfg, overwrite)

    def body() -> None:
        todo = [fr for fr in frames if not out.has(seg_name(fr.key), feat_name(fr.key))]
        if len(todo) < len(frames):
            logger.info("resuming: %d of %d frames already done", len(frames) - len(todo), len(frames))
        def prepare(image: np.ndarray, key: str):
            return prepare_levels(image, _frame_levels(proposer, image, key), encoder.image_size)

        def finish(key: str, job: Future) -> None:
            s, f = _encode_prepared(job.result(), encoder, batch_size)
            _write_frame(out, key, s, f)

        # proposals + crops of frame t+1 (CPU, worker thread) overlap the CLIP encoding of frame t
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for fr, image in tqdm(iter_rgb(todo), total=len(todo), desc="clip_features", unit="frame",
                                  disable=not progress):
                job = pool.submit(prepare, image, fr.key)
                if pending is not None:
                    finish(*pending)
                pending = (fr.key, job)
            if pending is not None:
                finish(*pending)
        save_json_atomic(dict(cfg, format="4dlangsplat-clip_features", levels=list(PLANES),
                              default_level=DEFAULT_LEVEL_DOC if masks != "precomputed" else "as precomputed",
                              embed_dim=encoder.embed_dim, image_size=encoder.image_size), out.path("meta.json"))

    return _run_staged(out, body)


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m preprocess.extract_semantics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", required=True, nargs="+",
                   help="scene folder (HyperNeRF layout: <scene>/rgb/2x/000001.png ...); several scenes or a dataset "
                        "root (a folder of scenes) are done one after the other, and under `torchrun "
                        "--nproc_per_node=N -m preprocess.extract_semantics ...` every process takes every N-th scene")
    p.add_argument("--frames-dir", default=None, help="frame folder if not <scene>/rgb/2x")
    p.add_argument("--mode", choices=["oracle", "clip"], required=True,
                   help="oracle: ground-truth regions + text embeddings (synthetic scenes); "
                        "clip: region proposals + CLIP image embeddings (real videos)")
    p.add_argument("--masks", choices=["skimage", "sam", "precomputed"], default="skimage",
                   help="clip mode region proposals: skimage (no weights, default), sam, or precomputed _s.npy")
    p.add_argument("--masks-dir", default=None, help="folder of <key>_s.npy for --masks precomputed")
    p.add_argument("--sam-checkpoint", default=None, help="SAM checkpoint for --masks sam (e.g. ckpt/sam/sam_vit_h_4b8939.pth)")
    p.add_argument("--sam-model-type", default=None, help="vit_h|vit_l|vit_b (default: guessed from the file name)")
    p.add_argument("--no-video", action="store_true", help="oracle mode: skip the time-sensitive video_features/")
    p.add_argument("--output-name", default="clip_features", help="output folder name inside the scene")
    p.add_argument("--batch-size", type=int, default=64, help="crops per CLIP image-encoder batch")
    add_device_arg(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output folders")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--hash-dim", type=int, default=512, help="embedding size of --hash-text")
    add_text_encoder_args(p, old_text_encoder_flag=True)
    add_logging_args(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    device = resolve_device(args.device)
    try:
        if args.mode == "clip":  # check the proposal source before loading CLIP weights
            if args.masks == "sam":
                proposer = SamProposer(args.sam_checkpoint, args.sam_model_type, device=str(device))
            elif args.masks == "precomputed":
                if not args.masks_dir:
                    raise SemanticsInputError("--masks precomputed needs --masks-dir DIR holding <key>_s.npy")
                proposer = PrecomputedProposer(args.masks_dir)
            else:
                proposer = SkimageProposer()
        if args.hash_text:
            if args.mode != "oracle":
                raise SemanticsInputError("--hash-text only works with --mode oracle (clip mode embeds "
                                          "image crops, which needs open_clip)")
            encoder = build_text_encoder("hash", dim=args.hash_dim, seed=args.clip_seed)
        else:
            encoder = text_encoder_from_options(args, device=device)
        scenes = expand_scene_args(args.scene, args.frames_dir)
        if len(scenes) > 1 and args.frames_dir:
            raise SemanticsInputError("--frames-dir names one frame folder but there are several scenes")
        for scene in my_share(scenes):
            with output_lock(scene / args.output_name, f"{args.output_name} of this scene"):
                written = _extract_scene(args, scene, encoder, proposer if args.mode == "clip" else None)
            for kind, path in written.items():
                print(f"wrote {kind} targets to {path}")
    except UserError:
        raise
    except (FileExistsError, FileNotFoundError) as exc:  # anything else unexpected keeps its traceback
        raise UserError(str(exc)) from None
    return 0


def _extract_scene(args: argparse.Namespace, scene: Path, encoder, proposer) -> dict[str, Path]:
    """The targets of one scene as the command line asks (the caller holds the scene's output lock)."""
    if args.mode == "oracle":
        return extract_oracle(scene, encoder, args.overwrite, args.output_name, video=not args.no_video,
                              frames_dir=args.frames_dir, progress=not args.no_progress)
    return {"clip": extract_clip(scene, encoder, proposer, args.overwrite, args.output_name, args.batch_size,
                                 args.masks, args.frames_dir, progress=not args.no_progress)}


def expand_scene_args(paths: list[str], frames_dir: str | None) -> list[Path]:
    """The scene folders of ``--scene``: each path itself when it is a scene (or ``--frames-dir`` is given), else
    the scenes of a dataset root (its sub-folders with ``rgb/2x`` frames), sorted."""
    from preprocess.frames import FrameSourceMissing

    out: list[Path] = []
    for p in map(Path, paths):
        if frames_dir or (p / "rgb" / "2x").is_dir() or not p.is_dir():
            out.append(p)
            continue
        subs = sorted(c for c in p.iterdir() if c.is_dir() and (c / "rgb" / "2x").is_dir())
        if not subs:
            raise FrameSourceMissing("neither a scene (no rgb/2x/ frames) nor a dataset root of scenes", p,
                                     "pass a scene folder in the HyperNeRF layout, or --frames-dir")
        out.extend(subs)
    return out


if __name__ == "__main__":
    with torch.inference_mode():
        raise SystemExit(main())
