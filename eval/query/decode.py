"""Decoding low-dimensional fields to CLIP space with the autoencoder they were encoded with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from utils.cli import UserError

Decoder = Callable[[torch.Tensor], torch.Tensor]


class LatentMismatchError(UserError, ValueError):
    """Fields whose feature size is not the autoencoder's latent size."""


def autoencoder_decoder(path: str | Path, device: str | torch.device = "cpu") -> Decoder:
    """``decode(z (..., k)) -> (..., D)`` unit features from a saved ``model.autoencoder.FeatureAutoencoder``.

    ``path`` is a folder written by ``FeatureAutoencoder.save`` (or a LangSplat state-dict file).
    """
    from model.autoencoder import CONFIG_FILE, FeatureAutoencoder  # lazy: separate owner

    ae = FeatureAutoencoder.load(path, device=device)  # refuses anything that is not an autoencoder, naming it

    @torch.no_grad()
    def decode(z: torch.Tensor) -> torch.Tensor:
        check_latent(z.shape[-1])
        lead = z.shape[:-1]
        out = ae.decode(z.reshape(-1, z.shape[-1]).to(device, torch.float32))
        return out.reshape(*lead, out.shape[-1])

    def check_latent(k: int) -> None:
        if k != ae.latent_dim:
            raise LatentMismatchError(f"the fields have {k}-d features but this autoencoder decodes {ae.latent_dim}-d "
                              "latents", path,
                              "pass the autoencoder the fields were encoded with (or none for full-size fields)")

    decode.check_latent = check_latent  # type: ignore[attr-defined]  (lets the evaluator check before scoring)
    # the text encoder of the features it was trained on (None: not recorded), for check_text_encoder
    decode.text_encoder = ae.text_encoder  # type: ignore[attr-defined]
    decode.source = Path(path) / CONFIG_FILE  # type: ignore[attr-defined]
    return decode
