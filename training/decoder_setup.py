"""The decoder a training run trains: its config (the ``--decoder`` preset, ``--decoder-config``, the data's widths;
a resumed checkpoint's own), the checks that it fits the training data, its initial weights (``--init``,
``--init-dpt-from``) and its wrapping for the training step (DDP under torchrun).

Refused with one ``error:`` line (:class:`utils.cli.UserError`): a resumed or ``--init`` decoder trained on tokens of
another backbone / layers / width or on targets of another dimension, a ``--decoder-config`` that is not JSON or
does not fit the decoder.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from model.decoder import DecoderConfig, init_feature_extractor_from_backbone
from model.decoder_io import (
    DecoderLoadError,
    build_decoder,
    decoder_config_from_dict,
    decoder_kind,
    load_state_strict,
    read_decoder,
)
from model.published_decoder import KIND as PUBLISHED
from model.published_decoder import PublishedDecoderConfig
from training.batchnorm import prepare_batchnorm
from training.config import TrainConfig
from training.dataset import SceneDataset, token_info_mismatches
from training.distributed import DistInfo
from utils.cli import UserError

logger = logging.getLogger("train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def decoder_config_from_flags(cfg: TrainConfig, ds: SceneDataset, video_dim: int
                              ) -> DecoderConfig | PublishedDecoderConfig:
    """The decoder config of a fresh run: the ``--decoder`` preset at the data's widths, ``--decoder-config``
    fields over it."""
    info = ds.token_info
    base = dict(dim_in=info["dim"], layers=tuple(info["layers"]), lang_dim=cfg.lang_dim or ds.lang_dim,
                video_dim=video_dim, rgb=cfg.w_rgb > 0, patch_size=info.get("patch_size", 14))
    override = {}
    if cfg.decoder_config:
        text = cfg.decoder_config
        try:
            is_file = Path(text).is_file()
        except OSError:  # a JSON string too long for a file name
            is_file = False
        try:
            override = json.loads(Path(text).read_text() if is_file else text)
        except json.JSONDecodeError as e:
            raise UserError(f"--decoder-config is not valid JSON ({e.msg} at column {e.colno})",
                            text if is_file else None, "pass a JSON object or a JSON file") from None
        if not isinstance(override, dict):
            raise UserError("--decoder-config is not a JSON object", text if is_file else None,
                            'pass a JSON object of config fields, e.g. \'{"frame_input": false}\'')
    if cfg.published:
        base.pop("video_dim")
        base.pop("rgb")  # the published head always has its RGB branch (frozen when --w-rgb 0)
        preset = PublishedDecoderConfig.tiny(**base) if cfg.decoder == "published-tiny" else \
            PublishedDecoderConfig(**base)
        try:
            return PublishedDecoderConfig.from_dict({**preset.to_dict(), **override})
        except (TypeError, ValueError) as e:
            raise UserError(f"--decoder-config does not fit the published head ({e})", None,
                            "pass only PublishedDecoderConfig fields (dim_in, patch_size, lang_dim, features, "
                            "hidden_dim, dpt_out_channels, layers); it has no video decoder") from None
    base.update(override)
    try:
        if cfg.decoder == "tiny":
            return DecoderConfig.tiny(**base)
        return DecoderConfig(**base)
    except (TypeError, ValueError) as e:
        raise UserError(f"--decoder-config does not fit our decoder ({e})", None,
                        "pass only DecoderConfig fields (see model/decoder.py)") from None


def _describe(cfg: DecoderConfig | PublishedDecoderConfig) -> str:
    d = cfg.to_dict()
    keys = (("dim_in", "features", "hidden_dim", "dpt_out_channels", "lang_dim")
            if isinstance(cfg, PublishedDecoderConfig) else
            ("dim_in", "dpt_features", "dpt_out_channels", "lang_widths", "rgb_widths", "lang_dim", "video_dim",
             "rgb", "frame_input", "norm"))
    return ", ".join(f"{k}={d[k]}" for k in keys)


def init_from(model: torch.nn.Module, path: str | Path, ds: SceneDataset | None = None,
              video_dim: int = 0) -> dict[str, Any]:
    """``--init``: load the weights ``path`` holds (published ``.pth`` or any decoder path) into ``model``,
    strictly. Raises :class:`UserError` when the file holds another kind or size of decoder, or (given the
    dataset ``ds``) one trained on tokens of another backbone, layers or width than ``ds``'s (when the file
    records them: our checkpoint folders do, a published ``.pth`` does not)."""
    src_cfg, sd, info = read_decoder(path)
    have = PUBLISHED if isinstance(src_cfg, PublishedDecoderConfig) else "ours"
    want = decoder_kind(model)
    names = {PUBLISHED: "the published head", "ours": "our decoder"}
    flags = {PUBLISHED: "--decoder published (or published-tiny)", "ours": "--decoder default (or tiny)"}
    if have != want:
        raise UserError(f"--init holds {names[have]} but this run trains {names[want]}", path,
                        f"train it with {flags[have]}, or pass another --init file")
    if ds is not None:
        misfits = decoder_misfits(src_cfg, ds, video_dim, info.get("token_info"),
                                  layers_known=info.get("layers_known", True))
        if misfits:
            raise UserError("--init does not fit this training data: " + "; ".join(misfits), path,
                            "pass a decoder trained on tokens of this backbone and layers (and targets of this "
                            "autoencoder), or train on tokens extracted like the ones it was trained on")
    try:
        load_state_strict(model, sd, path)
    except DecoderLoadError as e:
        raise UserError(e.what, path, f"choose --decoder / --decoder-config / --lang-dim to match the file "
                        f"({_describe(src_cfg)}); this run builds {_describe(model.config)}") from None
    return info


def decoder_misfits(cfg: DecoderConfig | PublishedDecoderConfig, ds: SceneDataset, video_dim: int,
                    recorded_tokens: dict[str, Any] | None = None, layers_known: bool = True) -> list[str]:
    """How a decoder (its config, and the token cache it was trained on when recorded) does not fit the data."""
    meta = ds.scenes[0].cache.dir / "meta.json"
    current = ds.token_info
    tokens = token_info_mismatches(recorded_tokens or {}, current)
    out = [f"{meta}: " + ", ".join(tokens)] if tokens else []
    said = " ".join(out)
    if layers_known and [int(x) for x in cfg.layers] != [int(x) for x in current["layers"]] and "layers" not in said:
        out.append(f"the decoder reads layers {list(cfg.layers)} but {meta} holds {current['layers']}")
    if int(cfg.dim_in) != int(current["dim"]) and "token width" not in said:
        out.append(f"the decoder takes tokens of width {cfg.dim_in} but {meta} holds width {current['dim']}")
    if int(cfg.lang_dim) != int(ds.lang_dim):
        out.append(f"the decoder predicts {cfg.lang_dim} language channels but the targets in "
                   f"{ds.scenes[0].root / ds.features_subdir} have {ds.lang_dim}")
    cfg_video = int(getattr(cfg, "video_dim", 0) or 0)
    if cfg_video and cfg_video != video_dim:
        where = ds.scenes[0].root / (ds.video_subdir or "video_features-language_features_dim6")
        have = f"have {video_dim}" if video_dim else "are not used (absent, --no-video or --w-video 0)"
        out.append(f"the decoder's time-sensitive head predicts {cfg_video} channels but the video targets "
                   f"({where}) {have}")
    return out


def checked_decoder_config(cfg: TrainConfig, ds: SceneDataset, video_dim: int, resume_state: Any
                           ) -> DecoderConfig | PublishedDecoderConfig:
    """The decoder config to train (the checkpoint's when resuming), refused when it does not fit the data."""
    if resume_state is not None:
        info = resume_state[2]
        dcfg = decoder_config_from_dict(info["decoder_config"])
        misfits = decoder_misfits(dcfg, ds, video_dim, info.get("token_info"))
        if misfits:
            raise UserError("the checkpoint does not fit this training data: " + "; ".join(misfits),
                            Path(info["path"]) / "state.json",
                            "resume on the tokens and targets it was trained on (same backbone, layers, "
                            "autoencoder and video targets), or start a new run with another --out")
        _warn_resumed_settings(info, cfg)
        return dcfg
    dcfg = decoder_config_from_flags(cfg, ds, video_dim)
    misfits = decoder_misfits(dcfg, ds, video_dim)
    if misfits:
        raise UserError("the decoder does not fit the training data: " + "; ".join(misfits), None,
                        "drop --lang-dim / the --decoder-config fields that disagree with the data")
    return dcfg


def _warn_resumed_settings(info: dict[str, Any], cfg: TrainConfig) -> None:
    """One warning line naming the flags that must stay the same on resume (:class:`TrainConfig`'s ``resume``
    metadata) and differ from the ones the checkpoint recorded."""
    diffs = cfg.resume_mismatches(info.get("args") or {})
    if diffs:
        logger.warning("resuming with other settings than the checkpoint was trained with (%s): the run will not "
                       "match an uninterrupted one", ", ".join(diffs))


def build_model(cfg: TrainConfig, dcfg: DecoderConfig | PublishedDecoderConfig, ds: SceneDataset, video_dim: int,
                resume_state: Any, published: bool, dist_info: DistInfo) -> torch.nn.Module:
    """The decoder with its initial weights (--init-dpt-from, --init), frozen RGB branch for the published head
    with --w-rgb 0, BatchNorm prepared for the process group, on the device."""
    seed_everything(cfg.seed)
    model = build_decoder(dcfg)
    if cfg.init_dpt_from and resume_state is None:
        copied = init_feature_extractor_from_backbone(model, cfg.init_dpt_from)
        if dist_info.is_main:
            logger.info("DPT feature extractor: %d tensors from %s", len(copied), cfg.init_dpt_from)
    if cfg.init and resume_state is None:
        info = init_from(model, cfg.init, ds=ds, video_dim=video_dim)
        if dist_info.is_main:
            logger.info("initial weights from %s (%s, epoch %s); fresh optimizer", info["path"],
                        info.get("format"), info.get("epoch"))
    elif cfg.init and dist_info.is_main:
        logger.info("--resume: the checkpoint's weights are used, --init is ignored")
    if published and cfg.w_rgb <= 0:
        for p in model.rgb_encoder.parameters():
            p.requires_grad_(False)
        for p in model.rgb_decoder.parameters():
            p.requires_grad_(False)
        if dist_info.is_main:
            logger.info("--w-rgb 0: the published head's RGB branch is kept but frozen")
    model = prepare_batchnorm(model, cfg.sync_bn, dist_info)
    return model.to(dist_info.device)


class PredictModule(torch.nn.Module):
    """The one call the trainer makes, ``decoder.predict(tokens, frame, patch_start_idx)``, as a ``forward`` (so
    DDP's hooks run) for any decoder kind. Holds the decoder as ``.decoder``; checkpoints save the decoder."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: list[torch.Tensor], frame: torch.Tensor, patch_start_idx: int) -> dict[str, Any]:
        return self.decoder.predict(tokens, frame, patch_start_idx)


def wrap_for_training(model: torch.nn.Module, dist_info: DistInfo) -> torch.nn.Module:
    """``PredictModule(model)``, inside DDP (defaults, so ``broadcast_buffers`` as published) when distributed."""
    net = PredictModule(model)
    if not dist_info.enabled:
        return net
    device = dist_info.device
    return DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
