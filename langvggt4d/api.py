"""The Python API: two lines from a notebook, the same code path as ``python -m inference.run``.

::

    from langvggt4d import LangVGGT4D

    system = LangVGGT4D.from_pretrained(backbone="tiny", decoder="runs/demo", autoencoder="ckpt/autoencoder/demo")
    out = system.predict("data/synthetic/demo")          # a video, a frames folder, a scene, or frames in memory
    out.fields["small"].shape                             # [S, k, H, W]
    hits = out.query("red ball")                          # relevancy [S, L, H, W], masks [S, H, W]
    out.save("outputs/demo")                              # today's inference output layout

:meth:`LangVGGT4D.predict` runs ``inference.run.run_source`` (the command's one per-source function) into a folder
and reads the result back, so the tensors are exactly what the command writes (``docs/architecture.md`` §7).
Shapes follow VGGT's convention: S frames, H x W the original frame size, k the field width, L the levels.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.config import InferConfig, apply_preset
from inference.outputs import OutputLayout, read_depth, read_fields
from inference.run import load_networks, run_source
from utils.cli import OptionError, UserError
from utils.device import resolve_device, resolve_dtype
from utils.io import read_json

#: the ``inference.run`` settings that are not ``predict`` options, and where each is set instead
SET_ELSEWHERE = {"source": "predict(frames)", "out": "predict(out=...)",
                 "decoder": "LangVGGT4D.from_pretrained(decoder=...)",
                 "backbone": "LangVGGT4D.from_pretrained(backbone=...)",
                 "autoencoder": "LangVGGT4D.from_pretrained(autoencoder=...)",
                 "video_autoencoder": "LangVGGT4D.from_pretrained(video_autoencoder=...)",
                 "device": "LangVGGT4D.from_pretrained(device=...)",
                 "compute_dtype": "LangVGGT4D.from_pretrained(dtype=...)",
                 "preset": "LangVGGT4D.from_pretrained(preset=...)"}

FrameInput = str | os.PathLike | torch.Tensor | np.ndarray | Sequence[np.ndarray]


@dataclass
class QueryResult:
    """One text query over a :class:`Prediction` (the exact reference path of ``eval.query --exact``).

    Attributes:
        text: the query.
        relevancy: [S, L, H, W] float32 LERF relevancy of every level against the canonical negatives.
        masks: [S, H, W] bool, the cleaned mask of the chosen level (4D LangSplat steps, docs/architecture.md §6).
        levels: [S] int64, the chosen level's index into ``Prediction.levels`` per frame.
        scores: [S] float32, the chosen level's highest smoothed relevancy.
    """

    text: str
    relevancy: torch.Tensor
    masks: torch.Tensor
    levels: torch.Tensor
    scores: torch.Tensor


@dataclass
class Prediction:
    """What inference wrote for one video, in memory.

    Attributes:
        keys: the S frame keys, in video order.
        levels: the field levels (``model.levels.LEVELS``: small, middle, large).
        fields: {level: [S, k, H, W] float32} (+ ``"video"`` [S, 6, H, W] with a time-sensitive head), on the
            original frames.
        valid: [S, H, W] bool, True inside the network's view.
        rgb: [S, 3, H, W] uint8, the decoder's RGB reconstruction as written (``rgb/<key>.png``), or None.
        depth, conf: [S, H, W] float32, or None without geometry.
        extrinsics: [S, 3, 4] float64 OpenCV camera-from-world; intrinsics: [S, 3, 3] float64 for the
            original frame size; or None without geometry.
        folder: the output folder the tensors were read from.
    """

    keys: list[str]
    levels: tuple[str, ...]
    fields: dict[str, torch.Tensor]
    valid: torch.Tensor
    rgb: torch.Tensor | None
    depth: torch.Tensor | None
    conf: torch.Tensor | None
    extrinsics: torch.Tensor | None
    intrinsics: torch.Tensor | None
    folder: Path
    text_encoder: Any = None
    _decode: Any = None
    _keep: Any = field(default=None, repr=False)  # the temporary folder, alive as long as this object

    @classmethod
    def load(cls, folder: str | os.PathLike, text_encoder: Any = None) -> Prediction:
        """Read an inference output folder (``python -m inference.run --out``) into tensors.

        ``text_encoder``: a ``model.text`` encoder (``build_text_encoder(...)``), or any ``encode_text(list[str])
        -> (N, D)`` callable, for :meth:`query`."""
        layout = OutputLayout(folder)
        if not layout.meta.is_file():
            raise UserError("not an inference output (no meta.json)", layout.root,
                            "pass the --out folder of python -m inference.run (or LangVGGT4D.predict)")
        meta = read_json(layout.meta)
        keys = [k for k in meta["frames"] if layout.fields(k).exists()]
        if not keys:
            raise UserError("no fields here (expected fields/<key>.safetensors)", layout.root,
                            "run inference into this folder first")
        levels = tuple(meta["levels"])
        per_frame = [read_fields(layout.fields(k))[0] for k in keys]
        names = [n for n in per_frame[0] if n != "valid"]
        fields = {n: torch.stack([f[n] for f in per_frame]) for n in names}
        valid = torch.stack([f["valid"] for f in per_frame]).bool()
        rgb = None
        if all(layout.rgb(k).exists() for k in keys):
            from inference.visualize import load_png

            rgb = torch.stack([torch.from_numpy(np.array(load_png(layout.rgb(k)))).permute(2, 0, 1) for k in keys])
        depth = conf = extrinsics = intrinsics = None
        if keys and all(layout.depth(k).exists() for k in keys):
            geo = [read_depth(layout.depth(k))[0] for k in keys]
            depth, conf = torch.stack([g["depth"] for g in geo]), torch.stack([g["conf"] for g in geo])
            extrinsics = torch.stack([g["extrinsics"] for g in geo])
            intrinsics = torch.stack([g["intrinsics"] for g in geo])
        return cls(keys=keys, levels=levels, fields=fields, valid=valid, rgb=rgb, depth=depth, conf=conf,
                   extrinsics=extrinsics, intrinsics=intrinsics, folder=layout.root, text_encoder=text_encoder)

    def _decoder(self):
        if self._decode is None:
            ae = OutputLayout(self.folder).autoencoder()
            if ae is not None:
                from eval.query.decode import autoencoder_decoder

                self._decode = autoencoder_decoder(ae)
        return self._decode

    @torch.no_grad()
    def query(self, text: str, threshold: float | None = None) -> QueryResult:
        """Relevancy maps and masks of ``text`` on every frame (docs/architecture.md §6), decoding the fields with
        the autoencoder copied into the output folder and embedding ``text`` with ``self.text_encoder``."""
        from eval.query.masks import MASK_THRESHOLD, masks_from_relevancy
        from eval.query.relevancy import RelevancyModel
        from model.text import check_text_encoder

        if self.text_encoder is None:
            raise ValueError("no text encoder: pass text_encoder= to LangVGGT4D.from_pretrained or Prediction.load")
        decode = self._decoder()
        identity = getattr(self.text_encoder, "identity", None)
        if decode is not None and identity is not None:  # refuse another embedding space than the targets'
            check_text_encoder(getattr(decode, "text_encoder", None), identity, getattr(decode, "source", None))
        model = RelevancyModel(getattr(self.text_encoder, "encode_text", self.text_encoder))
        stack = torch.stack([self.fields[lvl] for lvl in self.levels], dim=1)  # [S, L, k, H, W]
        rel, masks, chosen, scores = [], [], [], []
        for frame in stack:
            r = model.relevancy(frame.permute(0, 2, 3, 1).float(), [text], decode=decode)[0]  # [L, H, W]
            lm = masks_from_relevancy(r, threshold=MASK_THRESHOLD if threshold is None else threshold)
            rel.append(r)
            masks.append(lm.chosen_clean)
            chosen.append(lm.level)
            scores.append(lm.scores[lm.level])
        return QueryResult(text=text, relevancy=torch.stack(rel), masks=torch.stack(masks),
                           levels=torch.tensor(chosen, dtype=torch.long), scores=torch.stack(scores).float())

    def save(self, folder: str | os.PathLike) -> Path:
        """Write this prediction as an inference output folder (the layout of ``docs/architecture.md`` §7, the
        bytes ``python -m inference.run`` writes)."""
        folder = Path(folder)
        if folder.resolve() != self.folder.resolve():
            shutil.copytree(self.folder, folder, dirs_exist_ok=True)
        return folder


class LangVGGT4D:
    """The whole system: backbone + decoder (+ autoencoder and text encoder for queries).

    Build it with :meth:`from_pretrained`; :meth:`predict` runs a video through it.
    """

    def __init__(self, decoder: torch.nn.Module, backbone: torch.nn.Module | None, backbone_id: str | None,
                 specs: dict[str, str | None], device: torch.device, dtype: torch.dtype, text_encoder: Any = None):
        self.decoder, self.backbone, self.backbone_id = decoder, backbone, backbone_id
        self.specs, self.device, self.dtype, self.text_encoder = specs, device, dtype, text_encoder

    @classmethod
    def from_pretrained(cls, decoder: str | os.PathLike, backbone: str | None = "streamvggt",
                        autoencoder: str | os.PathLike | None = None, video_autoencoder: str | os.PathLike | None = None,
                        text_encoder: Any = None, device: str = "auto", dtype: str | None = None,
                        preset: str = "default") -> LangVGGT4D:
        """Load the networks once (as ``inference.run`` does).

        Args:
            decoder: any ``--decoder`` of ``inference.run`` (a run or checkpoint folder, a ``.safetensors``, the
                published ``.pth``, a :func:`model.decoder_io.save_pretrained` folder) or a Hub repo id.
            backbone: a ``--backbone`` specification (``model.backbones``: ``streamvggt``, ``vggt``, ``page4d``,
                ``tiny``, ``<family>:<weights>``), or None to read each scene's token cache (no geometry).
            autoencoder, video_autoencoder: folders of ``preprocess.train_autoencoder``, copied into every output.
            text_encoder: a ``model.text`` encoder for queries, or its kind (``"hash"``, ``"tiny"``,
                ``"open_clip"``; ``model.text.build_text_encoder``).
            device: cpu, cuda, cuda:1 or auto; dtype: the compute precision (``--compute-dtype``), fp32 (default),
                fp16 or bf16.
        """
        dev = resolve_device(device)
        if dtype is None:
            dtype = "fp32"
        dec, bb, bb_id = load_networks(str(decoder), backbone, dev, preset)
        assert dec is not None  # load_networks returns no decoder only when given no decoder path
        if isinstance(text_encoder, str):
            from model.text import build_text_encoder

            text_encoder = build_text_encoder(text_encoder, device=dev)
        specs = {"decoder": str(decoder), "backbone": backbone, "preset": preset,
                 "autoencoder": str(autoencoder) if autoencoder else None,
                 "video_autoencoder": str(video_autoencoder) if video_autoencoder else None,
                 "device": device, "dtype": dtype}
        return cls(dec, bb, bb_id, specs, dev, resolve_dtype(dtype), text_encoder)

    def options(self, source: str | os.PathLike, out: str | os.PathLike, **options: Any) -> InferConfig:
        """The ``inference.run`` settings (:class:`inference.config.InferConfig`, preset applied) for one call: the
        flags of ``python -m inference.run --help`` as keywords (``chunk_size=4``, ``no_geometry=True``,
        ``target_width=518``), read as the command line reads them; True for a switch, None or False to leave it.
        An unknown name, or one set elsewhere (:data:`SET_ELSEWHERE`), raises a TypeError
        (:class:`utils.cli.OptionError`) naming it (and the valid options); a value the flag would refuse, a
        ValueError (:class:`utils.cli.OptionValueError`)."""
        given = sorted(set(options) & set(SET_ELSEWHERE))
        if given:
            raise OptionError(f"predict() got the option {given[0]!r}, which is not a predict() option", None,
                              f"set it with {SET_ELSEWHERE[given[0]]}")
        cfg = InferConfig.from_options(options, exclude=tuple(SET_ELSEWHERE), caller="predict()")
        cfg = dataclasses.replace(
            cfg, source=[str(source)], decoder=str(self.specs["decoder"]), out=str(out),
            preset=str(self.specs["preset"]), device=str(self.specs["device"]),
            compute_dtype=str(self.specs["dtype"]), backbone=self._spec("backbone"),
            autoencoder=self._spec("autoencoder"), video_autoencoder=self._spec("video_autoencoder"))
        apply_preset(cfg)
        return cfg

    def _spec(self, name: str) -> str | None:
        value = self.specs[name]
        return str(value) if value else None

    def predict(self, frames: FrameInput, out: str | os.PathLike | None = None, **options: Any) -> Prediction:
        """Run inference on one video and return what it wrote.

        Args:
            frames: a video file, a frames folder or a scene folder (as ``inference.run --source``), or frames in
                memory: a uint8 [S, H, W, 3] array / list of [H, W, 3] arrays, or a [S, 3, H, W] tensor (uint8, or
                float in [0, 1]); these are written as PNG frames ``000001.png`` ... (lossless) first.
            out: the output folder (kept; resumes like the command), or None for a temporary one that lives as long
                as the returned :class:`Prediction` (``save`` copies it).
            options: further ``inference.run`` flags as keywords (:meth:`options`), e.g. ``chunk_size=4``.
        Returns:
            a :class:`Prediction`: fields [S, k, H, W] per level, valid, RGB, depth, cameras.
        """
        keep = None
        if out is None:
            keep = tempfile.TemporaryDirectory(prefix="langvggt4d-")
            out = Path(keep.name) / "out"
        if not isinstance(frames, (str, os.PathLike)):
            if keep is None:
                keep = tempfile.TemporaryDirectory(prefix="langvggt4d-")
            frames = write_frames(frames, Path(keep.name) / "frames")
        cfg = self.options(frames, out, **options)
        run_source(cfg, Path(frames), Path(out), self.decoder, self.backbone, self.backbone_id, self.device,
                   self.dtype)
        pred = Prediction.load(out, text_encoder=self.text_encoder)
        pred._keep = keep
        return pred


def write_frames(frames: torch.Tensor | np.ndarray | Sequence[np.ndarray], folder: Path) -> Path:
    """Frames in memory -> ``folder/000001.png`` ...; [S, 3, H, W] tensors (uint8 or float in [0, 1]) or
    [S, H, W, 3] / [H, W, 3] uint8 arrays."""
    from inference.visualize import save_png

    if isinstance(frames, torch.Tensor):
        x = frames.detach().cpu()
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"frames tensor must be [S, 3, H, W], got {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
        images = list(x.permute(0, 2, 3, 1).numpy())
    else:
        images = [np.asarray(f) for f in frames]
    for i, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"frame {i} must be an [H, W, 3] uint8 array, got {image.dtype} {image.shape}")
        save_png(folder / f"{i + 1:06d}.png", image)
    return folder
