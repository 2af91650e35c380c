import math

import pytest
import torch

from model.decoder import DecoderConfig, SemanticBridgingDecoder
from training.schedule import lr_at, param_groups


def test_warmup_then_constant_or_cosine():
    assert lr_at(0, 1.0, 4, 100) == 0.25 and lr_at(3, 1.0, 4, 100) == 1.0
    assert lr_at(50, 1.0, 4, 100, "constant") == 1.0
    assert lr_at(4, 1.0, 4, 100, "cosine", min_lr=0.1) == pytest.approx(1.0)
    assert lr_at(52, 1.0, 4, 100, "cosine", min_lr=0.0) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 4, 100, "cosine", min_lr=0.1) == pytest.approx(0.1)
    assert lr_at(0, 2.0, 0, 10) == 2.0
    with pytest.raises(ValueError):
        lr_at(0, 1.0, 0, 10, "linear")
    assert not math.isnan(lr_at(5, 1.0, 5, 5, "cosine"))


def test_no_weight_decay_on_biases_and_norms():
    model = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32))
    decay, no_decay = param_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    norm_weight = model.lang_encoder.inc[1].weight
    assert any(p is norm_weight for p in no_decay["params"])
    n = sum(len(g["params"]) for g in (decay, no_decay))
    assert n == len(list(model.parameters()))
    torch.optim.AdamW([decay, no_decay], lr=1e-3)
