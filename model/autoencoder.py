"""The LangSplat / 4D LangSplat feature autoencoder: D-dim unit features <-> k-dim unit latents.

Architecture (as published): encoder ``Linear(D, e0)`` then ``[BatchNorm1d, ReLU, Linear]`` for each further
width, L2-normalised output; decoder ``Linear(k, d0)`` then ``[ReLU, Linear]`` for each further width,
L2-normalised output. The modules live in ``encoder``/``decoder`` ``nn.ModuleList``s in that order.

Presets: CLIP 512 -> (256, 128, 64, 32, 3) -> (16, 32, 64, 128, 256, 512); video features 4096 ->
(2048, ..., 32, 6) -> (32, ..., 4096). Weights are saved as ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.io import save_json_atomic, save_safetensors_atomic

CLIP_ENCODER_DIMS = (256, 128, 64, 32, 3)
CLIP_DECODER_DIMS = (16, 32, 64, 128, 256, 512)
VIDEO_ENCODER_DIMS = (2048, 1024, 512, 256, 128, 64, 32, 6)
VIDEO_DECODER_DIMS = (32, 64, 128, 256, 512, 1024, 2048, 4096)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


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
        """Write ``<directory>/model.safetensors`` and ``<directory>/config.json`` (atomically)."""
        directory = Path(directory)
        cfg = dict(self.config, **(extra or {}))
        save_safetensors_atomic(dict(self.state_dict()), directory / WEIGHTS_FILE,
                                metadata={"config": json.dumps(self.config)})
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

        enc, dec = linears("encoder"), linears("decoder")
        if not enc or not dec:
            raise ValueError("state dict has no encoder.<i>.weight / decoder.<i>.weight linear layers")
        model = cls(enc[0].shape[1], [w.shape[0] for w in enc], [w.shape[0] for w in dec])
        model.load_state_dict(state_dict, strict=True)
        return model

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> FeatureAutoencoder:
        """Load a directory written by :meth:`save` (or a LangSplat ``.pth`` state dict file), in eval mode."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if directory.is_file():
            from model.safe_load import read_weights

            sd = read_weights(directory)
            return cls.from_state_dict(sd).to(device).eval()
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"autoencoder file {p} is missing; train one with "
                                        f"`python -m preprocess.train_autoencoder --out {directory} ...`")
        cfg = json.loads(cfg_path.read_text())
        model = cls(cfg["in_dim"], cfg["encoder_dims"], cfg["decoder_dims"])
        model.load_state_dict(load_file(str(w_path)), strict=True)
        return model.to(device).eval()


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
