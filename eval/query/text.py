"""Text encoders for queries and evaluation: the flags and the factory live below (``utils.cli`` and
``model.text``); these names are the query/evaluation side's entry points to them.

Every consumer depends only on a callable ``encode_text(list[str]) -> (N, D)`` unit-norm tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from model.text import (
    HashTextEncoder,  # noqa: F401  (re-exported)
    check_text_encoder,
    text_encoder_from_options,
)
from utils.cli import add_text_encoder_args  # noqa: F401  (the shared flags)

TextEncoder = Callable[[list[str]], torch.Tensor]


def text_encoder_from_args(args, device: str = "cpu", decoders=()) -> TextEncoder:
    """The ``encode_text`` of the encoder the shared flags ask for, refused (``model.text.check_text_encoder``)
    when one of ``decoders`` (``eval.query.decode.autoencoder_decoder``; None entries skipped) was trained on
    features of another encoder."""
    encoder = text_encoder_from_options(args, device=device)
    for decode in decoders:
        if decode is not None:
            check_text_encoder(getattr(decode, "text_encoder", None), encoder.identity, getattr(decode, "source", None))
    return encoder.encode_text
