"""LERF relevancy with canonical negatives (as used by LangSplat / 4D LangSplat).

For a feature ``f``, a positive text embedding ``q`` and each negative ``n_i``:
``p_i = softmax(T * [f.q, f.n_i])[0] = sigmoid(T * (f.q - f.n_i))``; the relevancy is ``min_i p_i``
("pairwise-softmax min"), i.e. ``sigmoid(T * (f.q - max_i f.n_i))``. Default ``T = 10``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

CANONICAL_NEGATIVES: tuple[str, ...] = ("object", "things", "stuff", "texture")
TEMPERATURE = 10.0

TextEncoder = Callable[[list[str]], torch.Tensor]


def lerf_relevancy(
    features: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = TEMPERATURE,
    normalize_features: bool = True,
    chunk: int = 1 << 18,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Relevancy of every feature to every positive.

    Args:
        features: (..., D) per-pixel features, e.g. (H, W, D) or (L, H, W, D).
        positives: (Q, D) or (D,) unit text embeddings.
        negatives: (N, D) unit embeddings of the canonical negatives (N >= 1).
        temperature: softmax temperature (10 in LERF).
        normalize_features: L2-normalise the features first (a no-op for unit features; zero vectors stay 0).
        chunk: pixels per batch (bounds peak memory).
        decode: optional ``decode(z (P, k)) -> (P, D)`` applied to each chunk first (autoencoded fields).

    Returns:
        (Q, ...) relevancy in (0, 1), float32, on the features' device ((...) if ``positives`` was 1-D).
    """
    squeeze = positives.dim() == 1
    pos = positives.reshape(-1, positives.shape[-1])
    if negatives.dim() != 2 or negatives.shape[0] == 0:
        raise ValueError("negatives must be a non-empty (N, D) tensor")
    lead = features.shape[:-1]
    flat = features.reshape(-1, features.shape[-1])
    dev = features.device
    text = torch.cat([pos, negatives], 0).to(dev, torch.float32)
    out = torch.empty(pos.shape[0], flat.shape[0], dtype=torch.float32, device=dev)
    nq = pos.shape[0]
    for s in range(0, flat.shape[0], chunk):
        f = flat[s:s + chunk]
        if decode is not None:
            f = decode(f).to(dev)
        f = f.to(torch.float32)
        if f.shape[-1] != text.shape[-1]:
            raise ValueError(f"feature dim {f.shape[-1]} does not match the text-embedding dim {text.shape[-1]}; "
                             "decode the fields to that dimension first (--autoencoder)")
        if normalize_features:
            f = F.normalize(f, dim=-1)
        sims = f @ text.T  # (P, Q + N)
        neg_max = sims[:, nq:].max(dim=1, keepdim=True).values
        out[:, s:s + chunk] = torch.sigmoid(temperature * (sims[:, :nq] - neg_max)).T
    out = out.reshape(nq, *lead)
    return out[0] if squeeze else out


class RelevancyModel:
    """Caches the text embeddings of queries and canonical negatives for one text encoder.

    ``encode_text(list[str]) -> (N, D)`` unit-norm tensor is the only dependency.
    """

    def __init__(self, encode_text: TextEncoder, negatives: Sequence[str] = CANONICAL_NEGATIVES,
                 temperature: float = TEMPERATURE) -> None:
        self.encode_text = encode_text
        self.negative_names = tuple(negatives)
        self.temperature = temperature
        self._cache: dict[str, torch.Tensor] = {}
        self.negatives = self.embed(list(self.negative_names))

    def embed(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), D) float32 CPU unit embeddings, cached per text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            with torch.no_grad():
                emb = self.encode_text(missing)
            emb = torch.as_tensor(emb).detach().to("cpu", torch.float32)
            emb = F.normalize(emb.reshape(len(missing), -1), dim=-1)
            for t, e in zip(missing, emb, strict=True):
                self._cache[t] = e
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.empty(0)

    def relevancy(self, features: torch.Tensor, queries: list[str],
                  decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """(Q, ...) relevancy of ``features`` (..., D) (or (..., k) with ``decode``) to each query text."""
        return lerf_relevancy(features, self.embed(queries), self.negatives, self.temperature, decode=decode)
