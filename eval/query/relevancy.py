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


# ---------------------------------------------------------------------------------------------------------------
# Relevancy of low-dimensional latents through a grid (interactive queries)
# ---------------------------------------------------------------------------------------------------------------

GRID_SIZE = 48  # points per latent axis of :class:`LatentGrid` (only the points next to the fields' latents decode)
MAX_GRID_DIM = 3  # grid_sample interpolates at most 3-D volumes; wider latents use the exact per-pixel path


def latent_range(latents: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (min, max) of latents whose channel axis is ``dim``, float64 (the box a :class:`LatentGrid`
    must span)."""
    x = latents.movedim(dim, -1)
    lo, hi = x.reshape(-1, x.shape[-1]).aminmax(dim=0)
    return lo.to(torch.float64), hi.to(torch.float64)


class LatentGrid:
    """The LERF relevancy of k-dim latents (k <= 3) interpolated from a regular grid over the latent box.

    The relevancy of an autoencoded pixel depends only on its latent ``z``:
    ``r(z) = sigmoid(T * (d . q - max_i d . n_i))`` with ``d = normalize(decode(z))``. Instead of decoding every
    pixel (k -> 512 dims, the cost of a query on a CPU), the decoder runs on the points of a regular
    ``size**k`` grid spanning ``[lo, hi]`` per axis; a set of queries is then one matrix product with the decoded
    grid features, giving the *logit* ``l(z) = d . q - max_i d . n_i`` at the grid points (:meth:`volume`), and
    each pixel's logit is the multilinear (trilinear for k = 3) interpolation of its grid cell's corners
    (``grid_sample``), followed by the same ``sigmoid(T * l)`` as the exact path. Interpolating the logit
    rather than the relevancy keeps the sharp sigmoid out of the interpolation.

    The grid is decoded lazily: only the corners of cells that hold a latent (:meth:`cover`), each once; the
    features stay (``features``, rows for the linear point indices ``ids``, axis 0 slowest), so later queries
    cost one matrix product. Fields occupy a thin part of the latent box (a few % of a 64^3 grid), so a fine
    grid costs far fewer decoder calls than a coarse dense one. ``decode_all()`` decodes every point.

    Latents outside ``[lo, hi]`` are clamped to the box (``padding_mode="border"``): build the grid over the
    range of the latents it will see (:func:`latent_range`).
    """

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], lo: Sequence[float] | torch.Tensor,
                 hi: Sequence[float] | torch.Tensor, size: int = GRID_SIZE, chunk: int = 1 << 16) -> None:
        lo = torch.as_tensor(lo, dtype=torch.float64).reshape(-1)
        hi = torch.as_tensor(hi, dtype=torch.float64).reshape(-1)
        if lo.shape != hi.shape or not 1 <= lo.numel() <= MAX_GRID_DIM:
            raise ValueError(f"a latent grid needs 1..{MAX_GRID_DIM} axes with lo/hi of the same length, "
                             f"got {tuple(lo.shape)} and {tuple(hi.shape)}")
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or bool((hi < lo).any()):
            raise ValueError(f"invalid latent range lo={lo.tolist()} hi={hi.tolist()}")
        if size < 2 or size ** lo.numel() > 1 << 24:
            raise ValueError(f"grid size must be >= 2 with at most 2**24 points, got {size}^{lo.numel()}")
        # a flat axis still needs two distinct grid planes (the interpolation then returns the plane's value)
        pad = torch.clamp(1e-6 * torch.maximum(lo.abs(), hi.abs()), min=1e-6)
        flat = (hi - lo) < pad
        self.lo = torch.where(flat, lo - pad, lo)
        self.hi = torch.where(flat, hi + pad, hi)
        self.size = int(size)
        self.k = lo.numel()
        self.decode = decode
        self.chunk = chunk
        self.axes = [torch.linspace(float(a), float(b), self.size, dtype=torch.float64).float()
                     for a, b in zip(self.lo, self.hi, strict=True)]
        self._ids: list[torch.Tensor] = []  # decoded grid points (linear indices), one tensor per decode call
        self._features: list[torch.Tensor] = []  # their (n, D) unit features
        self._decoded = torch.zeros(self.size ** self.k, dtype=torch.bool)
        self.n_decoded = 0

    @property
    def ids(self) -> torch.Tensor:
        """(n,) linear indices (axis 0 slowest) of the decoded grid points, in decoding order."""
        return torch.cat(self._ids) if self._ids else torch.empty(0, dtype=torch.long)

    @property
    def features(self) -> torch.Tensor | None:
        """(n, D) unit features of the decoded grid points (rows of :attr:`ids`)."""
        return torch.cat(self._features) if self._features else None

    @property
    def decoded(self) -> int:
        """Grid points decoded so far."""
        return self.n_decoded

    def contains(self, lo: torch.Tensor, hi: torch.Tensor) -> bool:
        """Whether the box [lo, hi] (k,) lies inside this grid's box."""
        lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
        return lo.numel() == self.k and bool((lo >= self.lo).all() and (hi <= self.hi).all())

    def point_coords(self, ids: torch.Tensor) -> torch.Tensor:
        """(n,) linear point indices -> (n, k) float32 latents (axis 0 slowest)."""
        out, rest = [], ids
        for axis in reversed(self.axes):
            out.append(axis[rest % self.size])
            rest = rest // self.size
        return torch.stack(out[::-1], dim=-1)

    def decode_points(self, ids: torch.Tensor) -> None:
        """Decode the grid points ``ids`` (distinct linear indices) that are not decoded yet."""
        ids = ids[~self._decoded[ids]]
        if ids.numel() == 0:
            return
        pts = self.point_coords(ids)
        with torch.no_grad():
            feats = torch.cat([self.decode(pts[s:s + self.chunk]).detach().to("cpu", torch.float32)
                               for s in range(0, pts.shape[0], self.chunk)])
        self._features.append(F.normalize(feats, dim=-1))  # what lerf_relevancy compares with the texts
        self._ids.append(ids)
        self._decoded[ids] = True
        self.n_decoded += int(ids.numel())

    def decode_all(self) -> None:
        """Decode every grid point (a dense grid)."""
        self.decode_points(torch.arange(self.size ** self.k))

    def normalized(self, latents: torch.Tensor) -> torch.Tensor:
        """(M, k) latents -> (M, k) float32 grid_sample coordinates in [-1, 1] (align_corners=True), in
        grid_sample's order: x = the last latent axis, ..., the first."""
        span = self.hi - self.lo
        scale = (2.0 / span).flip(0).float()
        shift = (-2.0 * self.lo / span - 1.0).flip(0).float()
        return torch.addcmul(shift, latents.flip(-1).to(torch.float32), scale).clamp_(-1.0, 1.0)

    def cover(self, xyz: torch.Tensor, spread: int = 0) -> None:
        """Decode the corners of the cells holding the (M, k) coordinates ``xyz`` (see :meth:`normalized`), and
        of the cells up to ``spread`` cells away."""
        g = self.size
        half = (g - 1) / 2.0
        pos = (xyz * half).add_(half).floor_().clamp_(0, g - 2)  # grid_sample's source index, its cell
        strides = torch.tensor([float(g ** a) for a in range(self.k)])  # x (the last latent axis) is fastest
        lin = (pos @ strides).long()  # exact: integers below 2**24
        occupied = torch.zeros(g ** self.k, dtype=torch.bool)
        occupied[lin] = True
        need = occupied.view(*([g] * self.k)).clone()  # the corners (c .. c + 1) of the cells c +- spread
        for a in range(self.k):
            base = need.clone()
            for d in range(-spread, spread + 2):
                if d == 0:
                    continue
                src = base.narrow(a, max(0, -d), g - abs(d))
                need.narrow(a, max(0, d), g - abs(d)).logical_or_(src)
        self.decode_points(torch.nonzero(need.reshape(-1)).flatten())

    def volume(self, positives: torch.Tensor, negatives: torch.Tensor) -> LogitVolume:
        """The queries' logits on this grid (filled in as points get decoded)."""
        return LogitVolume(self, positives, negatives)


class LogitVolume:
    """``d . q - max_i d . n_i`` for Q positive texts on the decoded points of a :class:`LatentGrid` (NaN at the
    points not decoded yet), and the relevancy of latents interpolated from it."""

    def __init__(self, grid: LatentGrid, positives: torch.Tensor, negatives: torch.Tensor) -> None:
        pos = positives.reshape(-1, positives.shape[-1]).to("cpu", torch.float32)
        if negatives.dim() != 2 or negatives.shape[0] == 0:
            raise ValueError("negatives must be a non-empty (N, D) tensor")
        self.grid = grid
        self.nq = pos.shape[0]
        self.text = torch.cat([pos, negatives.to("cpu", torch.float32)], 0)
        self.values = torch.full((self.nq, grid.size ** grid.k), float("nan"), dtype=torch.float32)
        self.filled = 0  # decode batches of the grid already in ``values``

    def sync(self) -> None:
        """Compute the logits of the grid points decoded since the last call (one matrix product per batch)."""
        g = self.grid
        while self.filled < len(g._features):
            feats, ids = g._features[self.filled], g._ids[self.filled]
            if feats.shape[-1] != self.text.shape[-1]:
                raise ValueError(f"text-embedding dim {self.text.shape[-1]} does not match the decoded dim "
                                 f"{feats.shape[-1]}")
            sims = feats @ self.text.T  # (n, Q + N)
            logit = sims[:, :self.nq] - sims[:, self.nq:].max(dim=1, keepdim=True).values
            self.values[:, ids] = logit.T
            self.filled += 1

    def _sample(self, coords: torch.Tensor) -> torch.Tensor:
        """grid_sample of the volume at (M, k) coordinates (:meth:`LatentGrid.normalized`) -> (Q, M)."""
        g, nq, m = self.grid, self.nq, coords.shape[0]
        vol = self.values.view(nq, *([g.size] * g.k))
        xyz = coords
        if g.k == 1:  # a 1-D grid is a 2-row 2-D grid, sampled on its first row
            vol = vol[:, None, :].expand(nq, 2, g.size)
            xyz = torch.cat([xyz, torch.full_like(xyz, -1.0)], dim=-1)
        dims = max(g.k, 2)
        # the 3-D CPU kernel runs one thread per batch item: split the points over the threads
        parts = max(1, min(torch.get_num_threads(), m))
        per = -(-m // parts)
        if per * parts != m:
            xyz = torch.cat([xyz, xyz.new_zeros(per * parts - m, dims)])
        xyz = xyz.reshape(parts, *([1] * (dims - 1)), per, dims)
        v = F.grid_sample(vol[None].expand(parts, *vol.shape), xyz, mode="bilinear", padding_mode="border",
                          align_corners=True)  # (parts, Q, 1.., per)
        return v.reshape(parts, nq, per).permute(1, 0, 2).reshape(nq, -1)[:, :m]

    def logits(self, latents: torch.Tensor, chunk: int = 1 << 21) -> torch.Tensor:
        """(..., k) latents -> (Q, ...) interpolated logits (decoding the grid points they need first)."""
        g = self.grid
        if latents.shape[-1] != g.k:
            raise ValueError(f"latents have {latents.shape[-1]} dims, the grid {g.k}")
        lead = latents.shape[:-1]
        flat = latents.reshape(-1, g.k)
        out = torch.empty(self.nq, flat.shape[0], dtype=torch.float32)
        for s in range(0, flat.shape[0], chunk):
            coords = g.normalized(flat[s:s + chunk])  # grid_sample's axis order
            g.cover(coords)
            self.sync()
            v = self._sample(coords)
            bad = torch.isnan(v).any(dim=0)
            if bool(bad.any()):  # a corner the cell rule missed (rounding at a cell border): widen, resample
                g.cover(coords[bad], spread=1)
                self.sync()
                v[:, bad] = self._sample(coords[bad])
                if bool(torch.isnan(v).any()):
                    raise RuntimeError("latent grid interpolation used a point that was not decoded")
            out[:, s:s + chunk] = v
        return out.reshape(self.nq, *lead)

    def relevancy(self, latents: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
        """(Q, ...) relevancy of (..., k) latents: ``sigmoid(T * interpolated logit)``."""
        return self.logits(latents).mul_(temperature).sigmoid_()
