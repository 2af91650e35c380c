"""The VGGT / PAGE-4D configuration, spelled with the official constructors' argument names.

``VGGTConfig.from_dict({"embed_dim": 32, "num_heads": 4, "patch_embed": "conv", "camera_head": {...}})``: what
the dict leaves out takes the official defaults (``VGGT()`` of ``facebookresearch/vggt`` and of PAGE-4D's
``model/page/models/vggt.py``), heads included: a camera head with a trunk of 4 blocks, 16 heads and 4
refinement iterations on ``2 * embed_dim`` channels; DPT heads with 256 features, out channels
[256, 512, 1024, 1024] reading layers [4, 11, 17, 23]. The sub-dicts ``camera_head``, ``depth_head``,
``point_head``, ``track_head`` take those constructors' argument names (plus ``num_iterations`` for the camera
head's forward).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

#: the official Aggregator arguments and their defaults (PAGE-4D adds the two mask holds)
AGGREGATOR_DEFAULTS: dict[str, Any] = {
    "img_size": 518, "patch_size": 14, "embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4.0,
    "num_register_tokens": 4, "qkv_bias": True, "proj_bias": True, "ffn_bias": True,
    "patch_embed": "dinov2_vitl14_reg", "aa_order": ["frame", "global"], "aa_block_size": 1, "qk_norm": True,
    "rope_freq": 100, "init_values": 0.01, "mask_hold_start": 0, "mask_hold_end": 0,
}
#: arguments our blocks do not vary: accepted only at the official value
FIXED = {"qkv_bias": True, "proj_bias": True, "ffn_bias": True, "aa_order": ["frame", "global"],
         "aa_block_size": 1}
HEAD_SWITCHES = {"enable_camera": True, "enable_point": True, "enable_depth": True, "enable_track": True}
HEAD_DICTS = ("camera_head", "depth_head", "point_head", "track_head")
CAMERA_DEFAULTS: dict[str, Any] = {"trunk_depth": 4, "pose_encoding_type": "absT_quaR_FoV", "num_heads": 16,
                                   "mlp_ratio": 4.0, "init_values": 0.01, "trans_act": "linear",
                                   "quat_act": "linear", "fl_act": "relu", "num_iterations": 4}
CAMERA_FIXED = {"trans_act": "linear", "quat_act": "linear", "fl_act": "relu"}
DPT_DEFAULTS: dict[str, Any] = {"features": 256, "out_channels": [256, 512, 1024, 1024],
                                "intermediate_layer_idx": [4, 11, 17, 23], "pos_embed": True, "down_ratio": 1}
DPT_ARGS = {"dim_in", "patch_size", "output_dim", "activation", "conf_activation", "features", "out_channels",
            "intermediate_layer_idx", "pos_embed", "feature_only", "down_ratio"}
TRACK_ARGS = {"dim_in", "patch_size", "features", "iters", "predict_conf", "stride", "corr_levels", "corr_radius",
              "hidden_size", "out_channels", "intermediate_layer_idx", "tracker_depth", "num_heads"}


def _check_keys(given: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown {where} argument(s) {unknown}; known: {sorted(known)}")


@dataclass
class VGGTConfig:
    """Official-name arguments: ``aggregator`` (the Aggregator's), head switches, and per-head sub-dicts."""

    aggregator: dict[str, Any] = field(default_factory=lambda: dict(AGGREGATOR_DEFAULTS))
    heads: dict[str, bool] = field(default_factory=lambda: dict(HEAD_SWITCHES))
    camera_head: dict[str, Any] = field(default_factory=lambda: dict(CAMERA_DEFAULTS))
    depth_head: dict[str, Any] = field(default_factory=dict)
    point_head: dict[str, Any] = field(default_factory=dict)
    track_head: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None = None) -> VGGTConfig:
        """Official defaults overridden by ``config``; unknown names or unsupported values raise ValueError."""
        config = copy.deepcopy(dict(config or {}))
        _check_keys(config, set(AGGREGATOR_DEFAULTS) | set(HEAD_SWITCHES) | set(HEAD_DICTS), "VGGT config")
        agg = {**AGGREGATOR_DEFAULTS, **{k: v for k, v in config.items() if k in AGGREGATOR_DEFAULTS}}
        for k, v in FIXED.items():
            if (list(agg[k]) if isinstance(agg[k], tuple) else agg[k]) != v:
                raise ValueError(f"{k}={agg[k]!r} is not supported (the published models use {v!r})")
        heads = {**HEAD_SWITCHES, **{k: bool(v) for k, v in config.items() if k in HEAD_SWITCHES}}
        cam = dict(config.get("camera_head") or {})
        _check_keys(cam, set(CAMERA_DEFAULTS) | {"dim_in"}, "camera_head")
        cam = {**CAMERA_DEFAULTS, **cam}
        for k, v in CAMERA_FIXED.items():
            if cam[k] != v:
                raise ValueError(f"camera_head {k}={cam[k]!r} is not supported (the published models use {v!r})")
        subs = {}
        for name in ("depth_head", "point_head"):
            d = dict(config.get(name) or {})
            _check_keys(d, DPT_ARGS, name)
            subs[name] = d
        track = dict(config.get("track_head") or {})
        _check_keys(track, TRACK_ARGS, "track_head")
        return cls(aggregator=agg, heads=heads, camera_head=cam, track_head=track, **subs)

    @property
    def embed_dim(self) -> int:
        return int(self.aggregator["embed_dim"])

    @property
    def token_dim(self) -> int:
        """Width of one aggregated token (frame half + global half)."""
        return 2 * self.embed_dim

    @property
    def depth(self) -> int:
        return int(self.aggregator["depth"])

    @property
    def patch_size(self) -> int:
        return int(self.aggregator["patch_size"])

    @property
    def patch_start_idx(self) -> int:
        return 1 + int(self.aggregator["num_register_tokens"])

    @property
    def camera_iterations(self) -> int:
        return int(self.camera_head["num_iterations"])

    def dpt(self, name: str) -> dict[str, Any]:
        """Full DPTHead arguments of ``depth_head`` / ``point_head`` (official defaults filled in)."""
        output = {"depth_head": dict(output_dim=2, activation="exp", conf_activation="expp1"),
                  "point_head": dict(output_dim=4, activation="inv_log", conf_activation="expp1")}[name]
        return {"dim_in": self.token_dim, "patch_size": self.patch_size, **output, **DPT_DEFAULTS,
                **getattr(self, name)}

    @property
    def dpt_layers(self) -> tuple[int, ...]:
        """The aggregator layers the depth head reads (what a token cache stores)."""
        return tuple(self.dpt("depth_head")["intermediate_layer_idx"])

    def to_dict(self) -> dict[str, Any]:
        """The official-name dict this config was made from (all defaults spelled out)."""
        out: dict[str, Any] = {**copy.deepcopy(self.aggregator), **self.heads}
        out["camera_head"] = dict(self.camera_head)
        for name in ("depth_head", "point_head", "track_head"):
            out[name] = copy.deepcopy(getattr(self, name))
        return out
