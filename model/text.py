"""Text encoders: the one factory (:func:`build_text_encoder`, :func:`text_encoder_from_options`) and the
weight-free encoder, a deterministic bag-of-words hash embedding.

Used wherever the pipeline must run without CLIP weights (the one-command demo, oracle checks): semantic
targets (``python -m preprocess.extract_semantics --mode oracle --hash-text``) and queries
(``python -m eval.evaluate --hash-text``) then share one embedding space. It is consistent, not semantic:
only texts that share words are similar.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re

import torch
import torch.nn.functional as F

from utils.cli import UserError

logger = logging.getLogger(__name__)


class HashTextEncoder:
    """Deterministic text encoder with no weights: the normalised sum of one seeded random unit vector per word.

    Texts that share words get a positive cosine (``"closed chicken container"`` vs ``"chicken container"``:
    2/sqrt(6) ~ 0.82); unrelated words are nearly orthogonal for large ``dim``.
    ``encode_text(list[str]) -> (N, dim)`` float32 unit rows; ``embed_dim`` and ``identity`` as ``ClipEncoder``.
    """

    def __init__(self, dim: int = 512, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed
        self.embed_dim = dim
        self.identity = f"hash-bow(dim={dim},seed={seed})"

    def _word(self, word: str) -> torch.Tensor:
        h = hashlib.sha256(f"{self.seed}:{word}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
        return F.normalize(torch.randn(self.dim, generator=g), dim=0)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """(N, dim) float32 unit embeddings."""
        rows = []
        for t in texts:
            words = re.findall(r"[a-z0-9]+", t.lower()) or [""]
            rows.append(torch.stack([self._word(w) for w in words]).sum(0))
        return F.normalize(torch.stack(rows), dim=-1)

    __call__ = encode_text


def build_text_encoder(kind: str = "open_clip", model: str | None = None, pretrained: str | None = None,
                       weights: str | None = None, seed: int = 0, precision: str = "fp32", dim: int = 512,
                       device: str | torch.device = "cpu"):
    """The text encoder ``kind`` names: ``hash`` (:class:`HashTextEncoder`), ``tiny`` (a tiny random open_clip, or
    one saved to ``weights``) or ``open_clip`` (``model`` with a ``pretrained`` tag or local ``weights``).
    Every encoder has ``encode_text(list[str]) -> (N, D)`` unit rows, ``embed_dim`` and ``identity``."""
    if kind == "hash":
        return HashTextEncoder(dim=dim, seed=seed)
    from model.clip import TINY_NAME, ClipEncoder

    if kind == "tiny":
        if weights:
            return ClipEncoder.from_pretrained(TINY_NAME, weights, device=device)
        return ClipEncoder.tiny(seed=seed, device=device)
    if kind != "open_clip":
        raise ValueError(f"unknown text encoder {kind!r}; choose hash, tiny or open_clip")
    from model.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED

    return ClipEncoder.from_pretrained(model or DEFAULT_MODEL, weights or pretrained or DEFAULT_PRETRAINED,
                                       device=device, precision=precision)


def text_encoder_from_options(options, device: str | torch.device = "cpu"):
    """The encoder that the shared flags (``utils.cli.add_text_encoder_args``) on ``options`` ask for."""
    if getattr(options, "hash_text", False):
        return build_text_encoder("hash", seed=options.clip_seed)
    return build_text_encoder("tiny" if options.clip == "tiny" else "open_clip", model=options.clip_model,
                              pretrained=options.clip_pretrained, weights=options.clip_weights,
                              seed=options.clip_seed, precision=options.clip_precision, device=device)


class TextEncoderMismatch(UserError, ValueError):
    """Queries would be embedded by another text encoder than the one the semantic targets were made with."""


def flags_for(identity: str) -> str:
    """The text-encoder flags (``utils.cli.add_text_encoder_args``) that rebuild the encoder named ``identity``."""
    if m := re.fullmatch(r"hash-bow\(dim=512,seed=(\d+)\)", identity):
        return "--hash-text" + (f" --clip-seed {m[1]}" if m[1] != "0" else "")
    if m := re.fullmatch(r"tiny-random\(seed=(\d+)\)", identity):
        return "--clip tiny" + (f" --clip-seed {m[1]}" if m[1] != "0" else "")
    if identity.startswith("tiny:"):
        return f"--clip tiny --clip-weights <the file {identity[5:]}>"
    model, _, weights = identity.partition(":")
    if weights.endswith((".bin", ".pt", ".pth", ".safetensors")):
        return f"--clip-model {model} --clip-weights <the file {weights}>"
    return f"--clip-model {model} --clip-pretrained {weights}"


def check_text_encoder(recorded: str | None, used: str, source: str | os.PathLike | None,
                       what: str = "queries would be embedded by") -> None:
    """Refuse to embed queries with encoder ``used`` when the autoencoder behind ``source`` (its ``config.json``)
    was trained on features of another encoder, ``recorded``: the two embedding spaces have nothing in common, so
    every relevancy would be noise. Same open_clip architecture under another weights name (a pretrained tag vs a local
    file of it, which may well be the same weights) is only warned about; nothing recorded (older folders, the
    published LangSplat ``.pth``) is not checked."""
    if not recorded or recorded == used:
        return
    model_a, _, weights_a = recorded.partition(":")
    model_b, _, weights_b = used.partition(":")
    clip_like = weights_a and weights_b and not recorded.startswith("tiny:") and not used.startswith("tiny:")
    if clip_like and model_a == model_b:
        logger.warning("%s: the targets were made with open_clip %s and queries use %s: fine if both name the same "
                       "weights, meaningless otherwise", source, recorded, used)
        return
    raise TextEncoderMismatch(f"{what} {used} but the autoencoder was trained on features of {recorded}",
                              source, f"pass {flags_for(recorded)} (the encoder of the targets), or an autoencoder "
                              f"trained on features of {used}")
