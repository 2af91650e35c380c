"""open_clip wrapper: one object that turns texts and images into unit-norm CLIP embeddings.

Three ways to get an encoder:

- ``ClipEncoder.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")``: the published model (open_clip downloads
  and caches it when online; a local file under ``ckpt/open_clip/`` is used first when present);
- ``ClipEncoder.from_pretrained("ViT-B-16", "ckpt/open_clip/x.safetensors")``: a local weights file;
- ``ClipEncoder.tiny(seed=0)``: a tiny open_clip model with seeded random weights and the real tokenizer
  (its BPE vocabulary ships inside the open_clip package, so it works offline). For tests and smoke runs.

Every encoder returns float32, L2-normalised rows of shape (N, D), computed in batches under
``torch.inference_mode``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from model.hub import hub_reachable
from utils.cli import CLIP_MODEL, CLIP_PRETRAINED, UserError
from utils.device import resolve_device

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_MODEL, DEFAULT_PRETRAINED = CLIP_MODEL, CLIP_PRETRAINED
LOCAL_CKPT_DIR = Path(__file__).resolve().parents[1] / "ckpt" / "open_clip"

#: The tiny random config: the real 49408-token vocabulary and 77-token context, everything else minimal.
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_NAME = "tiny"


def _local_candidates(model_name: str, tag: str) -> list[Path]:
    stem = f"{model_name}_{tag}"
    return [LOCAL_CKPT_DIR / f"{stem}{ext}" for ext in (".safetensors", ".bin", ".pth")]


def _hf_repo(model_name: str, tag: str) -> str | None:
    try:
        import open_clip

        return open_clip.get_pretrained_cfg(model_name, tag).get("hf_hub", "").rstrip("/") or None
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return None


class ClipEncoder:
    """A frozen open_clip model in eval mode plus its tokenizer.

    Attributes:
        model: the ``open_clip.CLIP`` module.
        embed_dim: D, the size of the joint embedding.
        image_size: S, the square input size of the image tower (224 for ViT-B-16).
        identity: a string naming the weights (recorded in the metadata of everything derived from them).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, identity: str, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.device = resolve_device(device)
        self.dtype = dtype
        self.model: Any = cast(Any, model.to(self.device, dtype=dtype).eval())  # an open_clip CLIP
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer: Any = tokenizer
        self.identity = identity
        size = getattr(self.model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        dim = getattr(self.model.visual, "output_dim", None)
        if not isinstance(dim, int):  # towers without that attribute: measure it once
            with torch.inference_mode():
                dim = int(self.model.encode_text(self.tokenizer([""]).to(self.device)).shape[-1])
        self.embed_dim = int(dim)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def tiny(cls, seed: int = 0, device: str | torch.device = "cpu") -> ClipEncoder:
        """A tiny open_clip CLIP (width 32, one block per tower, 512-d joint embedding like ViT-B-16) with weights drawn from ``seed``."""
        import open_clip
        from open_clip.model import CLIPTextCfg, CLIPVisionCfg

        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = open_clip.CLIP(
                embed_dim=TINY_CONFIG["embed_dim"],
                vision_cfg=CLIPVisionCfg(**TINY_CONFIG["vision_cfg"]),
                text_cfg=CLIPTextCfg(**TINY_CONFIG["text_cfg"]),
            )
        finally:
            torch.random.set_rng_state(gen_state)
        tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
        return cls(model, tokenizer, identity=f"tiny-random(seed={seed})", device=device)

    @classmethod
    def from_pretrained(cls, model_name: str = DEFAULT_MODEL, pretrained: str | Path = DEFAULT_PRETRAINED,
                        device: str | torch.device = "cpu", precision: str = "fp32",
                        cache_dir: str | None = None) -> ClipEncoder:
        """Load open_clip ``model_name`` with ``pretrained`` = an open_clip tag or a local weights file.

        A tag is first looked up as ``ckpt/open_clip/<model_name>_<tag>.{safetensors,bin,pth}``; otherwise
        open_clip resolves it (its cache, then the Hugging Face Hub when online). ``model_name="tiny"`` with a
        local file loads the tiny config with those weights (strict). Offline without the weights, this raises
        a ``RuntimeError`` whose message names the file to put under ``ckpt/open_clip/``.
        """
        import open_clip

        pretrained = str(pretrained)
        as_path = Path(pretrained)
        is_file = as_path.suffix in (".safetensors", ".bin", ".pth", ".pt") or as_path.exists()
        if is_file and not as_path.is_file():
            raise ClipWeightsMissing("open_clip weights file does not exist", as_path, "check --clip-weights")
        if model_name == TINY_NAME:
            if not is_file:
                raise ValueError("model 'tiny' has no pretrained tags: use ClipEncoder.tiny(seed) or pass a "
                                 "weights file saved from it")
            enc = cls.tiny(device="cpu")
            enc.model.load_state_dict(_read_state_dict(as_path), strict=True)
            return cls(enc.model, enc.tokenizer, identity=f"tiny:{as_path.name}", device=device)
        if not is_file:
            for cand in _local_candidates(model_name, pretrained):
                if cand.is_file():
                    logger.info("using local open_clip weights %s", cand)
                    as_path, is_file = cand, True
                    break
        repo = _hf_repo(model_name, pretrained)
        where = f"Hugging Face '{repo}' (file open_clip_pytorch_model.bin)" if repo else "the open_clip release"
        missing = (f"download it from {where} and put it at {_local_candidates(model_name, pretrained)[1]} (or pass "
                   "--clip-weights PATH); without weights, --hash-text (queries and oracle targets) uses a "
                   "weight-free text encoder")
        if is_file:  # read by our safe reader (never unpickled), into the architecture open_clip builds
            try:
                model = open_clip.create_model(model_name, pretrained=None, precision=precision, device="cpu")
                model.load_state_dict(_strip_module(_read_state_dict(as_path)), strict=True)
            except RuntimeError as exc:
                raise UserError(f"the weights do not fit open_clip {model_name} ({str(exc).splitlines()[0][:160]})",
                                as_path, "pass the weights of --clip-model, or the --clip-model they belong to"
                                ) from None
        else:
            if not _cached(repo) and not hub_reachable():
                raise ClipWeightsMissing(f"open_clip {model_name}/{pretrained} is not cached and the Hugging Face Hub cannot "
                                "be reached", None, missing)
            try:
                model = open_clip.create_model(model_name, pretrained=pretrained, precision=precision,
                                               device="cpu", cache_dir=cache_dir, require_pretrained=True)
            except Exception as exc:  # network / cache / bad file: turn into one actionable sentence
                raise ClipWeightsMissing(f"could not load open_clip {model_name}/{pretrained} ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:160] if str(exc) else ''})", None, missing) from None
        tokenizer = open_clip.get_tokenizer(model_name)
        identity = f"{model_name}:{as_path.name if is_file else pretrained}"
        dtype = torch.float16 if precision == "fp16" else torch.float32
        return cls(model, tokenizer, identity=identity, device=device, dtype=dtype)

    # ------------------------------------------------------------------ encoding
    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Embed ``texts`` -> float32 (N, D) unit rows on CPU (N = len(texts); (0, D) for an empty list)."""
        texts = list(texts)
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i:i + batch_size]).to(self.device)
            emb = self.model.encode_text(tokens).float()
            out.append(F.normalize(emb, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor | np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """Embed RGB images -> float32 (N, D) unit rows on CPU.

        ``images``: float tensor (N, 3, S, S) in [0, 1], or uint8 array/tensor (N, S, S, 3); S must equal
        ``image_size`` (resize the crops first, as the 4D LangSplat preprocessing does with cv2). The CLIP
        mean/std normalisation is applied here.
        """
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if images.dtype == torch.uint8:
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 images must be (N, S, S, 3), got {tuple(images.shape)}")
            images = images.permute(0, 3, 1, 2)
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (self.image_size,) * 2:
            raise ValueError(f"images must be (N, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}")
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(self.device)
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            x = ((x - self._mean) / self._std).to(self.dtype)
            emb = self.model.encode_image(x).float()
            out.append(F.normalize(emb, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    def save_weights(self, path: str | Path) -> None:
        """Write the model's state dict as safetensors (atomically), e.g. to reload a tiny model by file."""
        from utils.io import save_safetensors_atomic

        save_safetensors_atomic(dict(self.model.state_dict()), path, metadata={"identity": self.identity})


class ClipWeightsMissing(UserError, FileNotFoundError):
    """open_clip weights that are neither a local file nor in the cache, with the Hub out of reach."""


def _strip_module(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _cached(repo: str | None) -> bool:
    """True when open_clip's Hub file for ``repo`` is already in the local Hugging Face cache."""
    if not repo:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return any(isinstance(try_to_load_from_cache(repo, name), str)
                   for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
    except Exception:  # an unusual cache layout: let open_clip decide
        return True


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from model.safe_load import read_weights

    sd = read_weights(path)
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd
