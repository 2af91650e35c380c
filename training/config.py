"""The configuration of a training run: :class:`TrainConfig`, the one source of ``train.py``'s flags.

Each field is one flag: its type, its default and its help (``metadata=option(...)``, from which
:func:`build_parser` generates the command line), and what a resume may do with it (``resume=...``):

- :data:`SAME`: it shapes the training trajectory (optimisation, loss, seed, precision, which frames are trained);
  a resume with another value than the checkpoint recorded is warned about in one line naming the flags
  (:meth:`TrainConfig.resume_mismatches`);
- a function of the config (``epochs``): the same, but only when the config says so (the cosine schedule is laid
  out over ``--epochs``; a constant schedule may be continued for more epochs);
- :data:`FREE`: it may differ on resume without changing the trajectory (where the data lives, the decoder flags
  a resume ignores because the checkpoint holds its decoder, devices, logging, validation and saving cadence);
- :data:`INVOCATION`: it says how this process was invoked, not what it trains, so it is not recorded in the
  checkpoints' ``state.json`` (a run resumed after a kill writes the same bytes as an uninterrupted one).

``state.json`` records the config as ``args`` (:meth:`TrainConfig.recorded`: every field but the invocation ones,
tuples as lists), the same dict earlier versions recorded from the parsed flags, so older runs resume alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from model.published_decoder import KIND as PUBLISHED
from training.loss import LOSS_KINDS
from utils.cli import add_dataclass_args, add_device_arg, add_logging_args, dataclass_from_args, option

#: resume policies (the ``resume`` metadata of each field; see the module doc)
SAME, FREE, INVOCATION = "same", "free", "invocation"

#: ``--decoder`` presets -> the decoder kind they build
DECODER_PRESETS = {"default": "ours", "tiny": "ours", "published": PUBLISHED, "published-tiny": PUBLISHED}


def _int_at_least(text: str, low: int, what: str = "an integer") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _workers(text: str) -> int | None:
    return None if text == "auto" else _int_at_least(text, 0, "'auto' or an integer")


def _cosine_horizon(cfg: TrainConfig) -> bool:
    """``--epochs`` must stay the same on resume under the cosine schedule (its horizon), not the constant one."""
    return cfg.schedule == "cosine"


def _flag(help: str = "", resume: str | Callable[[TrainConfig], bool] | None = None, **kwargs: Any
          ) -> dict[str, Any]:
    """:func:`utils.cli.option` metadata plus the field's ``resume`` policy, which every field declares."""
    if resume is None:
        raise TypeError("a TrainConfig field declares its resume policy (SAME, FREE, INVOCATION or a function)")
    return {**option(help, **kwargs), "resume": resume}


_data = functools.partial(_flag, group="data")
_model = functools.partial(_flag, group="model")
_optim = functools.partial(_flag, group="optimisation")
_run = functools.partial(_flag, group="run")


@dataclass
class TrainConfig:
    """Everything ``train.py`` is told (one field per flag; ``python train.py --help`` prints the help below)."""

    # data
    scenes: list[str] = field(default_factory=list, metadata=_data(
        "scene folders (each with rgb/2x/, tokens/ and the feature folder), or dataset roots whose sub-folders are "
        "such scenes", FREE, nargs="+", required=True))
    tokens_subdir: str = field(default="tokens", metadata=_data("token cache folder inside each scene", FREE))
    features_subdir: str = field(default="clip_features-language_features_dim3", metadata=_data(
        "folder of <key>_f.npy / <key>_s.npy language targets inside each scene", FREE))
    video_features_subdir: str = field(default="video_features-language_features_dim6", metadata=_data(
        "folder of time-sensitive targets (<key>_f.npy, <key>_s.npy); the video head is trained only when every "
        "scene has it", FREE))
    no_video: bool = field(default=False, metadata=_data("never train the time-sensitive head", SAME))
    train_on_eval_frames: bool = field(default=False, metadata=_data(
        "also train on the annotated evaluation frames (the published behaviour); by default they are held out and "
        "used for the validation loss", SAME))
    cache_in_memory: bool = field(default=False, metadata=_data(
        "keep loaded samples in memory after their first use (small datasets / tests)", FREE))
    num_workers: int | None = field(default=None, metadata=_data(
        "DataLoader worker processes per rank (kept for the whole run). auto (default) = 0: the training process "
        "reads the token cache itself, which costs it less than receiving batches from workers through shared "
        "memory. The batches do not depend on it", INVOCATION, type=_workers))
    # model
    decoder: str = field(default="default", metadata=_model(
        "which decoder: default = ours (Semantic Bridging Decoder, published widths); tiny = ours at CPU-test "
        "widths; published = the published 4DLangVGGT head (LanguageHead_Multi, BatchNorm, no time-sensitive "
        "decoder: video targets are then ignored with a warning); published-tiny = that head at CPU-test widths",
        FREE, choices=list(DECODER_PRESETS)))
    decoder_config: str | None = field(default=None, metadata=_model(
        "JSON file or JSON string of config fields overriding the preset (DecoderConfig for ours, "
        "PublishedDecoderConfig for the published head)", FREE))
    init: str | None = field(default=None, metadata=_model(
        "start from these weights (weights only: fresh optimizer, epoch 0): a published 4DLangVGGT "
        "checkpoint_epoch_<N>.pth, or any decoder path model.decoder_io.load_decoder reads (run or checkpoint "
        "folder, .safetensors); loaded strictly, refused if the architecture differs from "
        "--decoder/--decoder-config; ignored with --resume", FREE, metavar="PATH"))
    sync_bn: bool = field(default=False, metadata=_model(
        "under torchrun, convert BatchNorm to SyncBatchNorm (statistics over the global batch; CUDA only, refused "
        "on CPU). Default: per-process BatchNorm statistics, as published", SAME))
    init_dpt_from: str | None = field(default=None, metadata=_model(
        "initialise the DPT feature extractor from this backbone's depth head: a StreamVGGT checkpoint, or "
        "vggt:<file or repo id> / page4d:<file> (matching tensors only; default: random init)", FREE))
    lang_dim: int | None = field(default=None, metadata=_model(
        "language feature channels (default: from the targets)", FREE))
    # optimisation
    epochs: int = field(default=100, metadata=_optim("total epochs", _cosine_horizon, type=_positive_int))
    stop_at_epoch: int | None = field(default=None, metadata=_optim(
        "stop after this epoch (the schedule still assumes --epochs; resume later with --resume)", INVOCATION,
        type=_positive_int))
    batch_size: int = field(default=8, metadata=_optim("samples per process per step", SAME, type=_positive_int))
    lr: float = field(default=4e-5, metadata=_optim("peak learning rate", SAME))
    min_lr: float = field(default=1e-6, metadata=_optim("final learning rate of the cosine schedule", SAME))
    schedule: str = field(default="constant", metadata=_optim("after warmup", SAME, choices=["constant", "cosine"]))
    warmup_epochs: float = field(default=20, metadata=_optim("linear warmup length in epochs", SAME))
    weight_decay: float = field(default=1e-4, metadata=_optim("AdamW weight decay (not on biases/norms)", SAME))
    betas: tuple[float, float] = field(default=(0.9, 0.95), metadata=_optim(
        "AdamW betas", SAME, type=float, nargs=2))
    clip_grad: float = field(default=1.0, metadata=_optim("gradient-norm clip (0 = off)", SAME))
    w_l1: float = field(default=0.2, metadata=_optim("weight of the masked feature L1", SAME))
    w_cos: float = field(default=0.01, metadata=_optim("weight of the masked feature cosine loss", SAME))
    w_img: float = field(default=0.5, metadata=_optim("RGB loss = w_img*L1 + (1-w_img)*MSE", SAME))
    w_rgb: float = field(default=1.0, metadata=_optim("weight of the RGB term (0 = no RGB branch)", SAME))
    w_video: float = field(default=1.0, metadata=_optim("weight of the time-sensitive term", SAME))
    loss: str = field(default="ours", metadata=_optim(
        "ours = masked means, cosine over the feature axis; published = reproduce the published loss exactly (L1 "
        "averaged over all elements incl. masked-out ones, cosine over the image width axis): a reproduction "
        "switch, not a recommendation", SAME, choices=list(LOSS_KINDS)))
    # run
    out: str = field(default="", metadata=_run(
        "run folder (checkpoints, last pointer, metrics.jsonl); one that already holds a run is refused without "
        "--resume", INVOCATION, required=True))
    resume: str | None = field(default=None, metadata=_run(
        "continue from a checkpoint folder, or (no value) from <out>'s newest checkpoint (the one <out>/last "
        "names, or a newer one a killed run saved just before updating last); the result is byte-identical to an "
        "uninterrupted run", INVOCATION, nargs="?", const="last"))
    save_every: int = field(default=5, metadata=_run(
        "checkpoint every N epochs (and at the end)", FREE, type=_positive_int))
    save_published_pth: bool = field(default=False, metadata=_run(
        "with the published decoder, also write <out>/checkpoint_epoch_<N>.pth in the published layout {epoch, "
        "model_state_dict, optimizer_state_dict, scaler, loss, args} (args as a plain dict) for the published "
        "inference code", FREE))
    device: str = field(default="auto", metadata=_run(resume=FREE, shared=add_device_arg))
    precision: str = field(default="auto", metadata=_run(
        "autocast precision on GPU (auto = fp16 with a grad scaler on CUDA, fp32 on CPU)", SAME,
        choices=["auto", "fp32", "fp16", "bf16"]))
    seed: int = field(default=42, metadata=_run("random seed", SAME))
    threads: int | None = field(default=None, metadata=_run("torch CPU threads per process", FREE))
    no_val: bool = field(default=False, metadata=_run("skip the per-epoch validation loss", FREE))
    val_every: int = field(default=1, metadata=_run(
        "compute the validation loss every N epochs and after the last one (default 1); it never changes the "
        "trained weights, only how often they are measured", FREE))
    wandb: str = field(default="disabled", metadata=_run(
        "wandb mode", FREE, choices=["disabled", "offline", "online"]))
    wandb_project: str = field(default="langvggt4d", metadata=_run("wandb project name", FREE))
    log_every: int = field(default=10, metadata=_run(
        "log the training loss every N steps", FREE, type=_positive_int))
    no_progress: bool = field(default=False, metadata=_run("hide tqdm progress bars", INVOCATION))
    # messages (utils.cli.add_logging_args)
    quiet: bool = field(default=False, metadata=_flag(resume=FREE, shared=add_logging_args))
    verbose: bool = field(default=False, metadata=_flag(resume=FREE, shared=add_logging_args))
    debug: bool = field(default=False, metadata=_flag(resume=INVOCATION, shared=add_logging_args))

    def __post_init__(self) -> None:
        self.scenes = [str(s) for s in self.scenes]
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    @classmethod
    def from_argv(cls, argv: list[str] | None = None) -> TrainConfig:
        """Parse ``train.py``'s command line (``argv``; None = ``sys.argv[1:]``)."""
        return dataclass_from_args(cls, build_parser().parse_args(argv))

    @property
    def published(self) -> bool:
        """Whether ``--decoder`` names the published head (a resume takes the checkpoint's kind instead)."""
        return DECODER_PRESETS[self.decoder] == PUBLISHED

    def to_dict(self) -> dict[str, Any]:
        """Every field, tuples as lists (JSON-ready), in field order."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def recorded(self) -> dict[str, Any]:
        """What ``state.json`` records as ``args``: every field but the :data:`INVOCATION` ones."""
        return {k: v for k, v in self.to_dict().items() if resume_policy(k) != INVOCATION}

    def resume_mismatches(self, recorded: dict[str, Any]) -> list[str]:
        """``--flag <recorded> -> <now>`` for each field that must stay the same on resume (its ``resume``
        metadata) and differs from ``recorded`` (a checkpoint's ``args``; a field it lacks is not compared)."""
        now = self.recorded()
        out = []
        for f in dataclasses.fields(self):
            policy = f.metadata["resume"]
            same = policy(self) if callable(policy) else policy == SAME
            if same and f.name in recorded and f.name in now and recorded[f.name] != now[f.name]:
                out.append(f"--{f.name.replace('_', '-')} {recorded[f.name]!r} -> {now[f.name]!r}")
        return out


def resume_policy(name: str) -> str | Callable[[TrainConfig], bool]:
    """The ``resume`` metadata of the field ``name``."""
    return _FIELDS[name].metadata["resume"]


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def build_parser() -> argparse.ArgumentParser:
    """``train.py``'s command line, generated from :class:`TrainConfig` (one flag per field)."""
    p = argparse.ArgumentParser(
        description="Train the Semantic Bridging Decoder (or, with --decoder published, the published 4DLangVGGT "
        "head) on cached StreamVGGT tokens and semantic targets. "
        "Single process: `python train.py --scenes data/hypernerf/americano --out runs/x`; "
        "multi-GPU/CPU: `torchrun --nproc_per_node=4 train.py ...` (--batch-size is per process).")
    add_dataclass_args(p, TrainConfig)
    return p
