"""2-D rotary position embedding (RoPE) as used by the StreamVGGT frame and global blocks.

Layout (identical to the official model): each head's ``D`` features are split in two halves; the first half
is rotated by the token's row ``y``, the second by its column ``x``. Inside each half of size ``d = D/2`` the
rotation is "half-split" (NeoX style): ``out = t*cos + rotate_half(t)*sin`` with
``rotate_half(t) = cat(-t[d/2:], t[:d/2])``, frequencies ``1 / base**(arange(0, d, 2)/d)`` and angles
duplicated (``cat(a, a)``). Angles are computed in fp32, cast to the token dtype, then ``cos``/``sin`` are taken
in that dtype (as the official code does). Special tokens sit at position (0, 0), patches at 1..h, 1..w.
"""

from __future__ import annotations

import torch


def patch_positions(grid_h: int, grid_w: int, num_special: int, device: torch.device | None = None) -> torch.Tensor:
    """(y, x) positions of one frame's tokens: ``num_special`` zeros, then the patch grid row-major + 1.

    Returns a long tensor (num_special + grid_h*grid_w, 2).
    """
    y = torch.arange(grid_h, device=device).repeat_interleave(grid_w)
    x = torch.arange(grid_w, device=device).repeat(grid_h)
    pos = torch.stack([y, x], dim=-1) + 1
    special = torch.zeros(num_special, 2, dtype=pos.dtype, device=device)
    return torch.cat([special, pos], dim=0)


class RoPE2D:
    """Precomputed 2-D RoPE tables for one token layout; apply with :meth:`apply`.

    Args:
        positions: (N, 2) long tensor of (y, x) positions of the N tokens of one frame.
        head_dim: per-head feature size D (divisible by 4).
        base: frequency base (100 in StreamVGGT).
    """

    def __init__(self, positions: torch.Tensor, head_dim: int, base: float = 100.0) -> None:
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
        half = head_dim // 2
        exponents = torch.arange(0, half, 2, device=positions.device).float() / half
        inv_freq = 1.0 / (base ** exponents)
        ang_y = positions[:, 0].float()[:, None] * inv_freq[None]
        ang_x = positions[:, 1].float()[:, None] * inv_freq[None]
        # (N, D): [y angles duplicated | x angles duplicated], fp32
        self.angles = torch.cat([ang_y, ang_y, ang_x, ang_x], dim=-1)
        self.num_tokens = positions.shape[0]
        self._tables: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (N, D), in ``dtype`` (angles cast first, then cos/sin in that dtype)."""
        if dtype not in self._tables:
            a = self.angles.to(dtype)
            self._tables[dtype] = (a.cos(), a.sin())
        return self._tables[dtype]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` (..., L, D) where L is a multiple of N (frames laid out one after another)."""
        cos, sin = self.tables(x.dtype)
        n = self.num_tokens
        length = x.shape[-2]
        if length != n:
            if length % n:
                raise ValueError(f"RoPE: {length} tokens is not a multiple of {n} tokens per frame")
            x = x.unflatten(-2, (length // n, n))
        d = x.shape[-1]
        q = d // 4
        x1, x2, x3, x4 = x[..., :q], x[..., q:2 * q], x[..., 2 * q:3 * q], x[..., 3 * q:]
        rotated = torch.cat([-x2, x1, -x4, x3], dim=-1)
        out = x * cos + rotated * sin
        if length != n:
            out = out.flatten(-3, -2)
        return out
