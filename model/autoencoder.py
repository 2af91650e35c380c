"""The LangSplat / 4D LangSplat feature autoencoder: D-dim unit features <-> k-dim unit latents.

Architecture (as published): encoder ``Linear(D, e0)`` then ``[BatchNorm1d, ReLU, Linear]`` for each further
width, L2-normalised output; decoder ``Linear(k, d0)`` then ``[ReLU, Linear]`` for each further width,
L2-normalised output. The modules live in ``encoder``/``decoder`` ``nn.ModuleList``s in that order.

Presets: CLIP 512 -> (256, 128, 64, 32, 3) -> (16, 32, 64, 128, 256, 512); video features 4096 ->
(2048, ..., 32, 6) -> (32, ..., 4096). Weights are saved as ``model.safetensors`` + ``config.json``; the weights
file is written first and carries the whole ``config.json`` content in its metadata (``config.json`` is a
readable copy that :func:`restore_config` can rewrite byte for byte). A file that is not an autoencoder (not
safetensors, a foreign pickle, another model's state dict, a broken ``config.json``) is refused by :meth:`load`
with one :class:`AutoencoderFileError` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.cli import UserError, json_safe
from utils.io import save_json_atomic, save_safetensors_atomic

CLIP_ENCODER_DIMS = (256, 128, 64, 32, 3)
CLIP_DECODER_DIMS = (16, 32, 64, 128, 256, 512)
VIDEO_ENCODER_DIMS = (2048, 1024, 512, 256, 128, 64, 32, 6)
VIDEO_DECODER_DIMS = (32, 64, 128, 256, 512, 1024, 2048, 4096)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SAVED_CONFIG_KEY = "saved_config"  # weights metadata entry: the JSON written to config.json


class AutoencoderFileError(UserError, ValueError):
    """A file given as an autoencoder that is not one (unreadable, foreign, another model's weights)."""


class AutoencoderMissingError(UserError, FileNotFoundError):
    """An autoencoder folder without its ``config.json`` / ``model.safetensors``."""


def default_dims(in_dim: int, latent_dim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Encoder/decoder widths for ``in_dim -> latent_dim``.

    The published presets for (512, 3) and (4096, 6); otherwise the same rule: hidden widths halve from
    ``in_dim / 2`` while >= 32 (or >= 2*latent for small inputs), then the latent; the decoder mirrors them
    and ends at ``in_dim``.
    """
    if (in_dim, latent_dim) == (512, 3):
        return CLIP_ENCODER_DIMS, CLIP_DECODER_DIMS
    if (in_dim, latent_dim) == (4096, 6):
        return VIDEO_ENCODER_DIMS, VIDEO_DECODER_DIMS
    floor = 32 if in_dim >= 64 else max(2 * latent_dim, 4)
    hidden = []
    h = in_dim // 2
    while h >= floor:
        hidden.append(h)
        h //= 2
    return tuple(hidden) + (latent_dim,), tuple(reversed(hidden)) + (in_dim,)


class FeatureAutoencoder(nn.Module):
    """``encode (..., D) -> (..., k)`` and ``decode (..., k) -> (..., D)``, both L2-normalised on the last axis."""

    def __init__(self, in_dim: int = 512, encoder_dims: Sequence[int] = CLIP_ENCODER_DIMS,
                 decoder_dims: Sequence[int] = CLIP_DECODER_DIMS) -> None:
        super().__init__()
        encoder_dims, decoder_dims = tuple(int(d) for d in encoder_dims), tuple(int(d) for d in decoder_dims)
        if not encoder_dims or not decoder_dims:
            raise ValueError("encoder_dims and decoder_dims must be non-empty")
        if decoder_dims[-1] != in_dim:
            raise ValueError(f"the decoder must end at in_dim={in_dim}, got decoder_dims={decoder_dims}")
        self.in_dim = int(in_dim)
        self.encoder_dims = encoder_dims
        self.decoder_dims = decoder_dims
        # the text encoder of the features it was trained on (``text_encoder`` in its config.json, set by
        # :meth:`load`; None when not recorded), which queries are checked against (model.text.check_text_encoder)
        self.text_encoder: str | None = None
        enc: list[nn.Module] = [nn.Linear(in_dim, encoder_dims[0])]
        for prev, nxt in zip(encoder_dims[:-1], encoder_dims[1:], strict=True):
            enc += [nn.BatchNorm1d(prev), nn.ReLU(), nn.Linear(prev, nxt)]
        dec: list[nn.Module] = [nn.Linear(encoder_dims[-1], decoder_dims[0])]
        for prev, nxt in zip(decoder_dims[:-1], decoder_dims[1:], strict=True):
            dec += [nn.ReLU(), nn.Linear(prev, nxt)]
        self.encoder = nn.ModuleList(enc)
        self.decoder = nn.ModuleList(dec)

    @property
    def latent_dim(self) -> int:
        return self.encoder_dims[-1]

    @property
    def config(self) -> dict:
        return {"in_dim": self.in_dim, "encoder_dims": list(self.encoder_dims),
                "decoder_dims": list(self.decoder_dims)}

    @staticmethod
    def _run(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        for layer in layers:
            x = layer(x)
        return F.normalize(x, dim=-1).reshape(*shape, x.shape[-1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) features -> (..., k) unit latents (BatchNorm uses batch statistics in train mode)."""
        return self._run(self.encoder, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., k) latents -> (..., D) unit features."""
        return self._run(self.decoder, z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) -> (latent (N, k), reconstruction (N, D))."""
        z = self.encode(x)
        return z, self.decode(z)

    def save(self, directory: str | Path, extra: dict | None = None) -> None:
        """Write ``<directory>/model.safetensors`` then ``<directory>/config.json`` (each atomically).

        The weights file's metadata holds the architecture (``config``) and the full ``config.json`` content
        (``saved_config``, with ``extra``), so a run stopped between the two files can finish the second one
        (:func:`restore_config`) with the bytes an uninterrupted run writes.
        """
        directory = Path(directory)
        cfg = json_safe(dict(self.config, **(extra or {})))
        save_safetensors_atomic(dict(self.state_dict()), directory / WEIGHTS_FILE,
                                metadata={"config": json.dumps(self.config),
                                          SAVED_CONFIG_KEY: json.dumps(cfg, allow_nan=False)})
        save_json_atomic(cfg, directory / CONFIG_FILE)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> FeatureAutoencoder:
        """Build a model whose widths are read from a state dict (ours, or LangSplat's ``best_ckpt.pth``).

        The published ``Autoencoder`` uses the same ``encoder.<i>`` / ``decoder.<i>`` ModuleList layout, so its
        state dicts load unchanged (strict).
        """
        def linears(prefix: str) -> list[torch.Tensor]:
            idx = sorted(int(k.split(".")[1]) for k, v in state_dict.items()
                         if k.startswith(prefix + ".") and k.endswith(".weight") and v.ndim == 2)
            return [state_dict[f"{prefix}.{i}.weight"] for i in idx]

        if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise ValueError("not a state dict (a mapping of names to tensors)")
        try:
            enc, dec = linears("encoder"), linears("decoder")
        except (KeyError, ValueError, IndexError) as e:
            raise ValueError(f"state dict with unexpected encoder/decoder keys ({e})") from None
        if not enc or not dec:
            raise ValueError("state dict has no encoder.<i>.weight / decoder.<i>.weight linear layers")
        try:
            model = cls(enc[0].shape[1], [w.shape[0] for w in enc], [w.shape[0] for w in dec])
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise ValueError(f"state dict does not fit the autoencoder layout ({str(e).splitlines()[0][:200]})"
                             ) from None
        return model

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> FeatureAutoencoder:
        """Load a directory written by :meth:`save` (or a LangSplat ``.pth`` / a ``.safetensors`` state dict file),
        in eval mode. Anything else is refused with one :class:`UserError` naming the offending file."""
        from model.safe_load import read_safetensors, read_weights

        directory = Path(directory)
        fix = ("pass the folder written by `python -m preprocess.train_autoencoder --out DIR` (or a LangSplat "
               "best_ckpt.pth)")
        if directory.is_file():
            try:
                sd = read_weights(directory)  # refuses foreign pickles and unreadable files, naming the file
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - torch's unpickler raises anything on a garbage file
                raise AutoencoderFileError(f"not a readable weights file ({type(e).__name__}: "
                                           f"{str(e).splitlines()[0][:120] if str(e) else ''})", directory, fix
                                           ) from None
            try:
                return cls.from_state_dict(sd).to(device).eval()
            except ValueError as e:
                raise AutoencoderFileError(f"not a feature autoencoder: {e}", directory, fix) from None
        if not directory.is_dir():
            raise AutoencoderMissingError("autoencoder not found", directory, fix)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise AutoencoderMissingError(
                    f"autoencoder file {p.name} is missing", p,
                    f"train one with `python -m preprocess.train_autoencoder --out {directory} ...`")
        try:
            cfg = json.loads(cfg_path.read_text())
            model = cls(int(cfg["in_dim"]), [int(d) for d in cfg["encoder_dims"]],
                        [int(d) for d in cfg["decoder_dims"]])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise AutoencoderFileError(f"not an autoencoder config ({type(e).__name__}: {e})", cfg_path,
                                       "write it again with preprocess.train_autoencoder") from None
        tensors, _ = read_safetensors(w_path)  # an unreadable file is refused naming it
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise AutoencoderFileError(f"weights do not fit {CONFIG_FILE} ({str(e).splitlines()[0][:200]})", w_path,
                                       "the two files come from different runs; train or copy the folder again"
                                       ) from None
        if isinstance(cfg.get("text_encoder"), str):
            model.text_encoder = cfg["text_encoder"]
        return model.to(device).eval()


def saved_config(directory: str | Path) -> dict | None:
    """The ``config.json`` content recorded in ``<directory>/model.safetensors`` (see :meth:`FeatureAutoencoder.save`),
    or None when the file is missing, unreadable or has no such record."""
    from safetensors import SafetensorError, safe_open

    w_path = Path(directory) / WEIGHTS_FILE
    try:
        with safe_open(str(w_path), framework="pt") as f:
            raw = (f.metadata() or {}).get(SAVED_CONFIG_KEY)
        cfg = json.loads(raw) if raw else None
    except (OSError, SafetensorError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def restore_config(directory: str | Path) -> dict:
    """Rewrite ``<directory>/config.json`` from the weights file's record (the bytes :meth:`save` writes)."""
    cfg = saved_config(directory)
    if cfg is None:
        raise AutoencoderFileError("the weights file records no configuration", Path(directory) / WEIGHTS_FILE,
                                   "train again with --overwrite")
    save_json_atomic(cfg, Path(directory) / CONFIG_FILE)
    return cfg


def autoencoder_loss(recon: torch.Tensor, target: torch.Tensor, cos_weight: float = 1e-3) -> torch.Tensor:
    """MSE + ``cos_weight`` * (1 - mean cosine over the feature axis); recon/target (N, D)."""
    mse = F.mse_loss(recon, target)
    cos = F.cosine_similarity(recon, target, dim=-1).mean()
    return mse + cos_weight * (1.0 - cos)


def _apply_chunked(model: FeatureAutoencoder, method: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   chunk: int, out_dim: int) -> torch.Tensor:
    """``method`` (``model.encode`` or ``model.decode``) over rows: (..., d) -> (..., out_dim), ``chunk`` rows at a
    time on the model's device and dtype, in eval mode (the model's training flag is restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        flat = x.reshape(-1, x.shape[-1])
        out = [method(flat[i:i + chunk].to(param.device, param.dtype)) for i in range(0, flat.shape[0], chunk)]
        res = torch.cat(out) if out else flat.new_zeros(0, out_dim)
        return res.reshape(*x.shape[:-1], out_dim)
    finally:
        model.train(was_training)


@torch.inference_mode()
def decode(model: FeatureAutoencoder, z: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
    """Decode latents of any leading shape, (..., k) -> (..., D) unit features, in chunks, eval mode."""
    return _apply_chunked(model, model.decode, z, chunk, model.in_dim)


@torch.inference_mode()
def encode(model: FeatureAutoencoder, x: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Encode features of any leading shape, (..., D) -> (..., k) unit latents, in eval mode."""
    return _apply_chunked(model, model.encode, x, chunk, model.latent_dim)


def load_autoencoder(path: str | Path, device: str | torch.device = "cpu") -> FeatureAutoencoder:
    """The factory's name for :meth:`FeatureAutoencoder.load` (our folder, its weights file, or a LangSplat .pth)."""
    return FeatureAutoencoder.load(path, device=device)
