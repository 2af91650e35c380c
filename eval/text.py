"""Text encoders for evaluation: a deterministic bag-of-words hash encoder and the open_clip wrapper.

Every consumer depends only on a callable ``encode_text(list[str]) -> (N, D)`` unit-norm tensor.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import torch
import torch.nn.functional as F

TextEncoder = Callable[[list[str]], torch.Tensor]


class HashTextEncoder:
    """Deterministic text encoder with no weights: the normalised sum of one seeded random unit vector per word.

    Texts that share words get a positive cosine (``"closed chicken container"`` vs ``"chicken container"``:
    2/sqrt(6) ~ 0.82); unrelated words are nearly orthogonal for large ``dim``. Used for oracle checks.
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


def text_encoder_from_args(args, device: str = "cpu") -> TextEncoder:
    """The encoder asked for by ``--hash-text`` or the shared ``model.clip.add_clip_args`` flags."""
    if getattr(args, "hash_text", False):
        return HashTextEncoder(seed=args.clip_seed).encode_text
    from model.clip import clip_from_args

    return clip_from_args(args, device=device).encode_text
