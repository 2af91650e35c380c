"""Networks and their weights. Every network is built or loaded through this small factory:

=========================  =====================================================================================
``load_backbone(spec)``    a backbone (StreamVGGT, VGGT, PAGE-4D) from one specification (``model.registry``)
``build_decoder(config)``  a fresh decoder: ours (``SemanticBridgingDecoder``) or the published head
``load_decoder(path)``     the decoder a checkpoint folder, ``.safetensors`` or published ``.pth`` holds
``load_autoencoder(path)`` the feature autoencoder (our folder or a LangSplat ``.pth``)
``build_text_encoder()``   hash, tiny or open_clip text encoder
=========================  =====================================================================================

Names resolve lazily, so ``import model.levels`` stays cheap.
"""

from __future__ import annotations

from typing import Any

_FACTORY = {
    "load_backbone": ("model.backbones", "load_backbone"),
    "build_decoder": ("model.decoder_io", "build_decoder"),
    "load_decoder": ("model.decoder_io", "load_decoder"),
    "load_autoencoder": ("model.autoencoder", "load_autoencoder"),
    "build_text_encoder": ("model.text", "build_text_encoder"),
}

__all__ = sorted(_FACTORY)


def __getattr__(name: str) -> Any:
    if name not in _FACTORY:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    import importlib

    module, attr = _FACTORY[name]
    return getattr(importlib.import_module(module), attr)
