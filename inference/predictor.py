"""The real predictor: frozen StreamVGGT (streaming, windowed cache) or a token cache -> decoder + geometry.

Per chunk of S frames:

* tokens: from ``<scene>/tokens`` when every frame of the chunk is cached (memory-mapped reads), else the
  aggregator runs on the chunk with its streaming cache (block-causal inside the chunk, attending to at
  most ``window`` past frames);
* decoder: ``SemanticBridgingDecoder(tokens of its layers, images)`` -> small/middle/large (+ video) and RGB;
* geometry (optional): the backbone's depth head on the DPT layers, the camera head (with its own
  streaming cache) on the last layer, decoded with ``pose_encoding_to_extri_intri`` for the network grid.
  From a token cache this works when the cache holds the DPT layers and the last layer (true for the
  published layers 4/11/17/23 of the 24-block model and 0..3 of the tiny one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from inference.pipeline import ChunkOutput, Frame
from utils.device import autocast

log = logging.getLogger(__name__)


class LangVGGTPredictor:
    """Chunk predictor for :func:`inference.pipeline.run_inference`.

    Args:
        decoder: a ``model.decoder.SemanticBridgingDecoder`` (eval mode), or None for geometry alone (then
            ``geometry`` and a backbone are required and the chunks carry no fields).
        backbone: a ``model.streamvggt.streamvggt.StreamVGGT`` (streams with caches), a windowed
            ``model.vggt.vggt.VGGT`` / PAGE-4D (overlapping windows of ``window`` frames joined by Sim(3); the
            pipeline's chunks must then be at most ``window - overlap`` frames), or None (then a token cache is
            required and no geometry is produced).
        token_cache: a ``preprocess.token_cache.TokenCache`` or None.
        window: past frames kept in the aggregator/camera caches (memory bound for long videos); for a windowed
            backbone, frames per window.
        overlap: windowed backbone only: frames each window shares with the one before.
        geometry: predict depth/confidence and cameras.
        fields_on_frame: ask the decoder for fields stretched onto each frame's whole (turned) source size
            (``crop.source_hw``), as the published inference calls its head; all frames must share one size.
    """

    stateless = False  # the streaming caches need every frame, even already-written ones

    def __init__(self, decoder: torch.nn.Module | None, backbone: torch.nn.Module | None = None, token_cache=None,
                 window: int | None = 128, geometry: bool = True, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, fields_on_frame: bool = False, overlap: int = 4) -> None:
        if decoder is None and not (geometry and backbone is not None):
            raise ValueError("without a decoder there is only geometry to predict: pass a backbone and geometry")
        self.decoder = decoder.eval() if decoder is not None else None
        self.fields_on_frame = fields_on_frame
        self.backbone = backbone.eval() if backbone is not None else None
        self.tokens = token_cache
        self.window = window
        self.device = torch.device(device)
        self.dtype = dtype
        self.layers: tuple[int, ...] = tuple(decoder.config.layers) if decoder is not None else ()
        self.geometry = geometry
        if backbone is None and token_cache is None:
            raise ValueError("no token cache and no backbone: pass --backbone (or extract tokens first)")
        if geometry and backbone is None:
            raise ValueError("geometry needs the backbone's camera and depth heads: pass --backbone or --no-geometry")
        self.runner = None
        streaming = backbone is not None and getattr(backbone, "streaming", True)
        self._agg_cache = backbone.aggregator.new_cache(window) if streaming else None
        self._cam_cache = backbone.camera_head.new_cache(window) if streaming else None
        if backbone is not None and not streaming:
            from model.vggt.windows import WindowedRunner

            self.runner = WindowedRunner(backbone, window or 32, overlap,
                                         heads=("camera", "depth") if geometry else ())
        self._window_out: dict | None = None
        self.patch_start_idx = None
        if geometry and backbone is not None:
            cfg = backbone.config
            self.dpt_layers = tuple(cfg.dpt_layers)
            self.last_layer = cfg.depth - 1
            if token_cache is not None:
                have = set(token_cache.layers)
                need = set(self.dpt_layers) | {self.last_layer}
                if not need <= have:
                    log.info("token cache lacks layers %s needed for geometry; the aggregator will run",
                             sorted(need - have))
                    self.tokens_for_geometry = False
                else:
                    self.tokens_for_geometry = True

    def _cached(self, frames: Sequence[Frame]) -> bool:
        if self.tokens is None or not all(f.key in self.tokens for f in frames):
            return False
        if self.geometry and not getattr(self, "tokens_for_geometry", True):
            return False
        if self._agg_cache is not None and self._agg_cache.num_frames_seen:
            return False  # already streaming through the aggregator: keep doing so for consistent context
        if self.runner is not None and self.geometry:
            return False  # the windows' cameras and depth need the backbone anyway
        return True

    @torch.no_grad()
    def __call__(self, frames: list[Frame], keep: list[bool]) -> ChunkOutput:
        images = torch.stack([f.image for f in frames]).to(self.device)  # (S, 3, h, w)
        S, _, h, w = images.shape
        with autocast(self.device, self.dtype):
            if self._cached(frames):
                per_frame = [self.tokens.load(f.key) for f in frames]
                layer_ids = list(self.tokens.layers)
                _check_stackable(per_frame, [self.tokens.path(f.key) for f in frames])
                by_layer = {lay: torch.stack([pf[j] for pf in per_frame]).to(self.device)
                            for j, lay in enumerate(layer_ids)}  # layer -> (S, P, 2C)
                psi = self.tokens.patch_start_idx
            else:
                if self.backbone is None:
                    missing = [f.key for f in frames if self.tokens is None or f.key not in self.tokens]
                    raise RuntimeError(f"frames {missing[:3]} are not in the token cache and no backbone was given; "
                                       "extract tokens for them or pass --backbone")
                if self.runner is not None:
                    self._window_out = self.runner.step(images.to(self._param_dtype()))
                    by_layer = {i: t for i, t in enumerate(self._window_out["tokens"])}
                    psi = self._window_out["patch_start_idx"]
                else:
                    outs, psi = self.backbone.aggregator(images[None].to(self._param_dtype()),
                                                         cache=self._agg_cache)
                    by_layer = {i: t[0] for i, t in enumerate(outs)}
                    del outs
            idx = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long, device=self.device)
            out_hw = None
            if self.fields_on_frame:
                sizes = {tuple(f.crop.source_hw) for f in frames}
                if len(sizes) != 1:
                    raise ValueError(f"frames of one chunk have different sizes {sorted(sizes)}")
                out_hw = sizes.pop()
            fields, rgb = self._decode(by_layer, images, psi, idx, S, out_hw)
        depth = conf = extr = intr = dynamic = None
        win, self._window_out = self._window_out, None
        if self.geometry and win is not None:  # a windowed backbone: joined geometry of this window
            depth, conf, extr, intr = win["depth"], win["depth_conf"], win["extrinsics"], win["intrinsics"]
        elif self.geometry:  # outside autocast: the official heads run in fp32 (their own dtype)
            depth, conf, extr, intr = self._geometry(by_layer, images, psi, idx, S, (h, w))
        if win is not None and "attn_value" in win:
            p = self.backbone.config.patch_size
            dynamic = patch_map_to_pixels(win["attn_value"][:, psi:].float(), (h // p, w // p), (h, w))
        return ChunkOutput(fields=fields, rgb=rgb, depth=depth, conf=conf, extrinsics=extr, intrinsics=intr,
                           on_frame=self.fields_on_frame, dynamic=dynamic)

    def _param_dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    def _decode(self, by_layer, images, psi, idx, S, out_hw=None):
        if len(idx) == 0 or self.decoder is None:
            return {}, None
        toks = [by_layer[lay].index_select(0, idx) for lay in self.layers]
        out = self.decoder.predict(toks, images.index_select(0, idx), patch_start_idx=psi, out_hw=out_hw)
        fields = {k: _scatter(v.float(), idx, S) for k, v in out["lang"].items()}
        if "video" in out:
            fields["video"] = _scatter(out["video"].float(), idx, S)
        rgb = _scatter(out["rgb"].float(), idx, S) if "rgb" in out else None
        return fields, rgb

    def _geometry(self, by_layer, images, psi, idx, S, hw):
        from model.streamvggt.pose import pose_encoding_to_extri_intri

        bb = self.backbone
        depth_len = bb.config.depth
        head_dtype = bb.camera_head.token_norm.weight.dtype
        sparse = [by_layer[i][None].to(head_dtype) if i in by_layer else None for i in range(depth_len)]
        pose = bb.camera_head(sparse, cache=self._cam_cache)[-1][0].float()  # (S, 9)
        extr, intr = pose_encoding_to_extri_intri(pose, hw)
        if len(idx) == 0:
            return None, None, extr, intr
        sub = [t.index_select(1, idx) if t is not None else None for t in sparse]
        depth, conf = bb.depth_head(sub, images.index_select(0, idx)[None].to(self._param_dtype()),
                                    patch_start_idx=psi)
        return (_scatter(depth[0, ..., 0].float(), idx, S), _scatter(conf[0].float(), idx, S), extr, intr)


def patch_map_to_pixels(values: torch.Tensor, grid: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Per-patch values (S, gh*gw) (row-major patch grid ``grid``) -> (S, h, w): each patch's value on its
    pixels."""
    return torch.nn.functional.interpolate(values.reshape(-1, 1, *grid), size=hw, mode="nearest")[:, 0]


def _check_stackable(per_frame: list[list[torch.Tensor]], paths: list) -> None:
    """Refuse (TokenCacheError naming the file) frames whose layers do not all have the first frame's shapes,
    before ``torch.stack`` would fail on them."""
    from preprocess.token_cache import EXTRACT_HINT, TokenCacheError

    want = [tuple(t.shape) for t in per_frame[0]]
    for tensors, path in zip(per_frame, paths, strict=True):
        got = [tuple(t.shape) for t in tensors]
        if got != want:
            raise TokenCacheError(f"{path}: token shapes {got} differ from {want} of {paths[0]}; {EXTRACT_HINT}")


def _scatter(x: torch.Tensor, idx: torch.Tensor, S: int) -> torch.Tensor:
    """(K, ...) rows for the frames ``idx`` -> (S, ...) with zeros for the other frames."""
    if x.shape[0] == S:
        return x
    out = x.new_zeros((S, *x.shape[1:]))
    out[idx] = x
    return out
