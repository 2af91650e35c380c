"""Text encoders for queries and evaluation: the flags and the factory live below (``utils.cli`` and
``model.text``); these names are the query/evaluation side's entry points to them.

Every consumer depends only on a callable ``encode_text(list[str]) -> (N, D)`` unit-norm tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from model.text import (
    HashTextEncoder,  # noqa: F401  (re-exported)
    text_encoder_from_options,
)
from utils.cli import add_text_encoder_args  # noqa: F401  (the shared flags)

TextEncoder = Callable[[list[str]], torch.Tensor]


def text_encoder_from_args(args, device: str = "cpu") -> TextEncoder:
    """The ``encode_text`` of the encoder the shared flags ask for."""
    return text_encoder_from_options(args, device=device).encode_text
