"""Text encoders for evaluation: the weight-free hash encoder (``model.text.HashTextEncoder``) and open_clip.

Every consumer depends only on a callable ``encode_text(list[str]) -> (N, D)`` unit-norm tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from model.text import HashTextEncoder  # noqa: F401  (re-exported: the encoder lives in model/text.py)

TextEncoder = Callable[[list[str]], torch.Tensor]


def build_text_encoder(name: str = "ViT-B-16", pretrained: str = "laion2b_s34b_b88k", device: str = "cpu",
                       seed: int = 0) -> TextEncoder:
    """``"hash"`` -> :class:`HashTextEncoder`; ``"tiny"`` -> ``ClipEncoder.tiny(seed)``; else an open_clip model name.

    model/clip.py is imported lazily so the evaluator works without it for the hash encoder.
    """
    if name == "hash":
        return HashTextEncoder(seed=seed).encode_text
    from model.clip import ClipEncoder  # lazy: heavy import, separate owner

    if name == "tiny":
        return ClipEncoder.tiny(seed=seed, device=device).encode_text
    return ClipEncoder.from_pretrained(name, pretrained, device=device).encode_text


def add_text_encoder_args(parser) -> None:
    """The text-encoder flags shared by ``eval.evaluate`` and ``eval.query``: ``--hash-text`` and the project's
    open_clip flags (``--clip tiny|pretrained``, ``--clip-model``, ``--clip-pretrained``, ``--clip-weights`` ...)."""
    parser.add_argument("--hash-text", action="store_true",
                        help="use the weight-free bag-of-words hash text encoder instead of open_clip (synthetic "
                             "scenes whose targets were made with it; oracle checks)")
    from model.clip import add_clip_args

    add_clip_args(parser)


def text_encoder_from_args(args, device: str = "cpu") -> TextEncoder:
    """The encoder asked for by ``--hash-text`` or the shared ``model.clip.add_clip_args`` flags."""
    if getattr(args, "hash_text", False):
        return HashTextEncoder(seed=args.clip_seed).encode_text
    from model.clip import clip_from_args

    return clip_from_args(args, device=device).encode_text
