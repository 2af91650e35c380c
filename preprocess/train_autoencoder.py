"""Train the LangSplat feature autoencoder on one or many scenes, then write the encoded targets.

Reads every row of every ``<scene>/<features>/*_f.npy`` (float32 or float64; all-zero rows, which the
published video features use for ids without a caption, are left out of training), trains the autoencoder
(Adam, MSE + cos_weight * (1 - cos), shuffled batches), saves it to ``--out`` (``model.safetensors`` +
``config.json``), and writes ``<scene>/<features>-language_features_dim<k>/<key>_f.npy`` (N, k) float32 unit
rows with ``<key>_s.npy`` copied unchanged (folder built beside and renamed at the end).

Refused, naming the file: a feature file that is not (N, D), of another D than the others, or with rows holding
NaN or infinite values (they were left out of training and then encoded into NaN targets before; re-extract the
frame instead). A killed run re-run with the same command resumes: an autoencoder already saved in ``--out`` by the
same request (same scenes, feature rows, hyper-parameters and seed; recorded in the weights file) is kept and the
scenes are encoded with it; an encoded folder that already holds exactly what this run would write is kept. The
result is byte-identical to an uninterrupted run. Anything else already in the way is refused without
``--overwrite``.

Recipes (docs/architecture.md §4): CLIP (512-d) -> 3, lr 7e-4, cos_weight 1e-3; video (4096-d) -> 6, lr 7e-5, cos_weight
1e-2; 100 epochs, batch 64. The model with the lowest full-data loss over the last 10% of epochs is kept
(the published script evaluates epochs > 90 on the training rows and keeps the best).

Examples::

    python -m preprocess.train_autoencoder --scenes data/synthetic/demo --features clip_features --dim 3 \\
        --out ckpt/autoencoder/demo
    python -m preprocess.train_autoencoder --scenes data/hypernerf/* --features video_features --dim 6 \\
        --out ckpt/autoencoder/hypernerf_video
    python -m preprocess.train_autoencoder --scenes data/new_scene --features clip_features --dim 3 \\
        --load ckpt/autoencoder/demo        # encode only, with an existing autoencoder
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.autoencoder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    FeatureAutoencoder,
    autoencoder_loss,
    default_dims,
    encode,
    restore_config,
    saved_config,
)
from model.text import check_text_encoder
from preprocess.semantics.scene import OutputExistsError, StagedOutput, remove_stale_temps
from preprocess.target_format import feat_files, feat_name, feat_path, key_of, partner, seg_name, seg_path
from utils.cli import UserError, add_device_arg, add_logging_args, cli_main, json_safe, setup_logging_from
from utils.device import resolve_device
from utils.io import load_npy, save_json_atomic, save_npy_atomic
from utils.lock import output_lock

logger = logging.getLogger(__name__)


class FeaturesMissingError(UserError, FileNotFoundError):
    """A scene without the feature files to train on or encode."""


def feature_files(scene: str | Path, features: str = "clip_features") -> list[Path]:
    """Sorted ``<scene>/<features>/*_f.npy``; a clear error if there are none."""
    d = Path(scene) / features
    files = feat_files(d) if d.is_dir() else []
    if not files:
        raise FeaturesMissingError(f"no {features}/*_f.npy feature files", d,
                                   f"run `python -m preprocess.extract_semantics --scene {scene} ...` first")
    return files


def read_feature_file(f: Path, dim: int | None = None) -> np.ndarray:
    """One ``_f.npy`` as float32 (N, D), refused (naming the file) when it is not 2-D, has another D than ``dim``
    or holds a row with NaN or infinite values."""
    a = load_npy(f)  # a file that is not a plain .npy: one error naming it (utils.cli.BadFileError)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
        raise UserError(f"feature file of shape {a.shape} and type {a.dtype}, expected float (N, D)", f,
                        "re-extract the features with preprocess.extract_semantics")
    if dim is not None and a.shape[1] != dim:
        raise UserError(f"feature rows have D={a.shape[1]} but the other files have D={dim}", f,
                        "keep one kind of features per folder")
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    if bad.size:
        raise UserError(f"{bad.size} of {a.shape[0]} feature rows hold NaN or infinite values (rows "
                        f"{bad[:5].tolist()}{'...' if bad.size > 5 else ''})", f,
                        "re-extract this frame's features (preprocess.extract_semantics --overwrite)")
    return np.asarray(a, np.float32)


def load_rows(scenes: list[str | Path], features: str = "clip_features") -> torch.Tensor:
    """All non-zero rows of all ``_f.npy`` of ``scenes`` -> float32 (M, D) (bad files refused, see
    :func:`read_feature_file`)."""
    rows, dim = [], None
    for scene in scenes:
        for f in feature_files(scene, features):
            a = read_feature_file(f, dim)
            dim = a.shape[1]
            rows.append(a)
    x = torch.from_numpy(np.concatenate(rows))
    x = x[x.abs().sum(dim=1) > 0]
    if x.shape[0] < 2:
        raise ValueError(f"{features} of {scenes} hold fewer than 2 non-zero rows; nothing to train on")
    return x


def features_text_encoder(scenes: list[str | Path], features: str = "clip_features") -> str | None:
    """The text encoder (``identity``) that made the ``features`` of every scene (``clip`` in
    ``<scene>/<features>/meta.json``, written by ``preprocess.extract_semantics``); None when a scene does not say
    (features made elsewhere). Scenes whose features were made with different encoders are refused: one autoencoder
    cannot serve two embedding spaces."""
    found: dict[str, Path] = {}
    for scene in scenes:
        meta = Path(scene) / features / "meta.json"
        try:
            value = json.loads(meta.read_text()).get("clip") if meta.is_file() else None
        except (ValueError, UnicodeDecodeError, AttributeError):
            value = None
        if not isinstance(value, str):
            return None
        found.setdefault(value, meta)
    if len(found) > 1:
        raise UserError("these features were made with different text encoders (" + ", ".join(
            f"{k} in {v}" for k, v in found.items()) + ")", None,
            "re-extract them with one encoder (python -m preprocess.extract_semantics ... --overwrite)")
    return next(iter(found), None)


def recipe(in_dim: int, dim: int) -> dict:
    """Default lr / cos_weight: the video recipe for 4096-d inputs, the CLIP recipe otherwise."""
    if in_dim >= 4096:
        return {"lr": 7e-5, "cos_weight": 1e-2}
    return {"lr": 7e-4, "cos_weight": 1e-3}


def train(x: torch.Tensor, dim: int = 3, epochs: int = 100, batch_size: int = 64, lr: float | None = None,
          cos_weight: float | None = None, encoder_dims=None, decoder_dims=None, seed: int = 0,
          device: str | torch.device = "cpu", best_of_last: float = 0.1,
          progress: bool = True) -> tuple[FeatureAutoencoder, dict]:
    """Train an autoencoder on rows ``x`` (M, D); returns (model in eval mode, stats)."""
    device = resolve_device(device)
    in_dim = x.shape[1]
    enc_d, dec_d = default_dims(in_dim, dim)
    enc_d, dec_d = tuple(encoder_dims or enc_d), tuple(decoder_dims or dec_d)
    if enc_d[-1] != dim:
        raise ValueError(f"encoder dims {enc_d} must end at --dim {dim}")
    rec = recipe(in_dim, dim)
    lr = rec["lr"] if lr is None else lr
    cos_weight = rec["cos_weight"] if cos_weight is None else cos_weight
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FeatureAutoencoder(in_dim, enc_d, dec_d).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x_dev = x.to(device)
    m = x.shape[0]
    best, best_state, best_epoch = float("inf"), None, -1
    first_eval = int(epochs * (1.0 - best_of_last))
    bar = tqdm(range(epochs), desc="autoencoder", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        perm = torch.randperm(m, generator=gen).to(device)
        total = 0.0
        for i in range(0, m, batch_size):
            idx = perm[i:i + batch_size]
            if idx.numel() < 2:  # BatchNorm needs 2+ rows in train mode
                continue
            _, recon = model(x_dev[idx])
            loss = autoencoder_loss(recon, x_dev[idx], cos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        bar.set_postfix(loss=f"{total / m:.2e}")
        if epoch >= first_eval:
            model.eval()
            with torch.no_grad():
                _, recon = model(x_dev)
                ev = float(torch.nn.functional.mse_loss(recon, x_dev)
                           + (1 - torch.nn.functional.cosine_similarity(recon, x_dev, dim=-1).mean()))
            if ev < best:
                best, best_state, best_epoch = ev, copy.deepcopy(model.state_dict()), epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(model(x_dev)[1], x_dev, dim=-1)
    stats = {"rows": m, "in_dim": in_dim, "dim": dim, "epochs": epochs, "batch_size": batch_size, "lr": lr,
             "cos_weight": cos_weight, "best_epoch": best_epoch, "best_eval_loss": best,
             "min_cos": float(cos.min()), "mean_cos": float(cos.mean()), "seed": seed}
    return model, stats


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _check_sources(model: FeatureAutoencoder, files: list[Path]) -> None:
    """Every feature file readable, finite, of the autoencoder's D, with its ``_s.npy``: checked before anything is
    written (one error naming the file)."""
    for f in files:
        s_src = partner(f)
        if not s_src.is_file():
            raise UserError("segment file missing (every _f.npy needs its _s.npy)", s_src,
                            "re-extract the features with preprocess.extract_semantics")
        read_feature_file(f, model.in_dim)


def _encoded(model: FeatureAutoencoder, files: list[Path]):
    """Yield ``(key, encoded float32 (N, k), source _s.npy path)`` per feature file."""
    for f in files:
        z = encode(model, torch.from_numpy(read_feature_file(f, model.in_dim)))
        yield key_of(f), z.cpu().numpy().astype(np.float32), partner(f)


def _same_encoding(model: FeatureAutoencoder, files: list[Path], final: Path) -> bool:
    """True when ``final`` holds exactly the files :func:`encode_scene` would write (same names, same bytes)."""
    expected = {n for f in files for n in (f.name, partner(f).name)}
    if not final.is_dir() or {p.name for p in final.iterdir()} != expected:
        return False
    for key, z, s_src in _encoded(model, files):
        if feat_path(final, key).read_bytes() != _npy_bytes(z):
            return False
        if seg_path(final, key).read_bytes() != s_src.read_bytes():
            return False
    return True


def encode_scene(model: FeatureAutoencoder, scene: str | Path, features: str = "clip_features",
                 output_name: str = "language_features", overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``<scene>/<features>-<output_name>_dim<k>/`` (encoded ``_f.npy``, copied ``_s.npy``), atomically.

    Without ``overwrite``, an existing folder is kept when it already holds exactly these bytes (an earlier run of
    the same command finished it) and refused otherwise.
    """
    scene = Path(scene)
    files = feature_files(scene, features)
    k = model.latent_dim
    final = scene / f"{features}-{output_name}_dim{k}"
    _check_sources(model, files)
    if final.exists() and not overwrite:
        if _same_encoding(model, files, final):
            logger.info("%s already holds this encoding; kept", final)
            return final
        raise OutputExistsError(final)
    out = StagedOutput(final, {"features": features, "dim": k}, overwrite=overwrite)
    try:
        for key, z, s_src in tqdm(_encoded(model, files), total=len(files), desc=f"encode {scene.name}",
                                  unit="frame", disable=not progress):
            save_npy_atomic(z, out.path(feat_name(key)))
            tmp = out.path(f".{seg_name(key)}.tmp")
            shutil.copyfile(s_src, tmp)
            tmp.replace(out.path(seg_name(key)))
    except (UserError, FileNotFoundError, ValueError):
        out.abort()
        raise
    return out.commit()


def training_request(args: argparse.Namespace, x: torch.Tensor) -> dict:
    """What determines the trained autoencoder: the data (shape and SHA-256 of the rows), the scenes and features
    as given, and every hyper-parameter. A saved autoencoder with the same request is what this run would train."""
    return {"features": args.features, "scenes": [str(s) for s in args.scenes], "rows": int(x.shape[0]),
            "in_dim": int(x.shape[1]), "rows_sha256": hashlib.sha256(x.numpy().tobytes()).hexdigest(),
            "dim": args.dim, "encoder_dims": args.encoder_dims, "decoder_dims": args.decoder_dims,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "cos_weight": args.cos_weight,
            "seed": args.seed}


def _reuse_saved(out: Path, request: dict, device) -> tuple[FeatureAutoencoder, dict] | None:
    """The autoencoder an earlier run of the same request saved in ``out`` (config.json and train_stats.json
    rewritten from the weights file's record if that run was stopped before them), else None."""
    cfg = saved_config(out)
    if cfg is None or cfg.get("request") != request:
        return None
    restore_config(out)
    stats = cfg.get("train") or {}
    save_json_atomic(stats, out / "train_stats.json")
    return FeatureAutoencoder.load(out, device=device), stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m preprocess.train_autoencoder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", nargs="+", required=True, help="one or more scene folders (rows of all are pooled)")
    p.add_argument("--features", default="clip_features", help="feature folder name: clip_features or video_features")
    p.add_argument("--dim", type=int, default=3, help="latent size k (3 for CLIP features, 6 for video features)")
    p.add_argument("--in-dim", type=int, default=None, help="input size D (default: read from the data; checked)")
    p.add_argument("--encoder-dims", type=int, nargs="+", default=None,
                   help="encoder widths ending at --dim (default: 256 128 64 32 3 for 512-d, the video preset for 4096-d)")
    p.add_argument("--decoder-dims", type=int, nargs="+", default=None,
                   help="decoder widths ending at D (default: 16 32 64 128 256 512 for 512-d)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (recipe: 100)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (recipe: 64)")
    p.add_argument("--lr", type=float, default=None, help="Adam lr (default 7e-4; 7e-5 for 4096-d video features)")
    p.add_argument("--cos-weight", type=float, default=None, help="weight of 1-cos (default 1e-3; 1e-2 for 4096-d)")
    p.add_argument("--seed", type=int, default=0, help="random seed (init and shuffling)")
    p.add_argument("--out", default=None, help="where to save the autoencoder (model.safetensors + config.json)")
    p.add_argument("--load", default=None, help="skip training: encode with the autoencoder saved in this folder")
    p.add_argument("--output-name", default="language_features",
                   help="encoded folder is <scene>/<features>-<output-name>_dim<k>")
    p.add_argument("--no-encode", action="store_true", help="only train and save; do not write encoded targets")
    add_device_arg(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing encoded folders / autoencoder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_logging_args(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    with contextlib.ExitStack() as held:
        try:
            device = resolve_device(args.device)
            text_encoder = features_text_encoder(args.scenes, args.features)
            if args.load:
                model = FeatureAutoencoder.load(args.load, device=device)
                if model.latent_dim != args.dim:
                    raise ValueError(f"autoencoder {args.load} has latent size {model.latent_dim}, not --dim {args.dim}")
                if text_encoder:
                    check_text_encoder(model.text_encoder, text_encoder, Path(args.load) / CONFIG_FILE,
                                       what=f"the {args.features} to encode were made with")
                stats = None
            else:
                if not args.out:
                    raise ValueError("--out DIR is required to save the trained autoencoder (or pass --load DIR)")
                out = Path(args.out)
                held.enter_context(output_lock(out, "this autoencoder folder"))  # one writer at a time
                x = load_rows(args.scenes, args.features)
                if args.in_dim is not None and args.in_dim != x.shape[1]:
                    raise ValueError(f"--in-dim {args.in_dim} but the {args.features} rows have D={x.shape[1]}")
                request = training_request(args, x)
                remove_stale_temps(out, [WEIGHTS_FILE, "config.json", "train_stats.json"])  # left by a killed run
                reused = None
                if (out / WEIGHTS_FILE).exists() and not args.overwrite:
                    reused = _reuse_saved(out, request, device)
                    if reused is None:
                        raise UserError("an autoencoder from another run is already saved there", out / WEIGHTS_FILE,
                                        "pass --overwrite or another --out")
                    logger.info("%s was trained by the same request (an earlier, interrupted run): kept", out)
                    model, stats = reused
                else:
                    logger.info("training on %d rows of dim %d from %d scene(s)", x.shape[0], x.shape[1],
                                len(args.scenes))
                    model, stats = train(x, args.dim, args.epochs, args.batch_size, args.lr, args.cos_weight,
                                         args.encoder_dims, args.decoder_dims, args.seed, device,
                                         progress=not args.no_progress)
                    stats = json_safe(stats)
                    extra = {"features": args.features, "scenes": [str(s) for s in args.scenes], "train": stats,
                             "request": request}
                    if text_encoder:
                        extra["text_encoder"] = text_encoder  # checked by the queries (model.text.check_text_encoder)
                    model.save(out, extra=extra)
                    save_json_atomic(stats, out / "train_stats.json")
            written = [] if args.no_encode else [
                encode_scene(model, s, args.features, args.output_name, args.overwrite, progress=not args.no_progress)
                for s in args.scenes]
        except UserError:
            raise
        except (FileNotFoundError, FileExistsError, ValueError) as exc:
            raise UserError(str(exc)) from None
    if stats:
        print(f"autoencoder saved to {args.out}: {stats['rows']} rows, min cos {stats['min_cos']:.4f}, "
              f"mean cos {stats['mean_cos']:.4f}")
    for w in written:
        print(f"wrote {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
