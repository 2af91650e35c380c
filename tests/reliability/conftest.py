"""Shared checks of the reliability suite: an expected failure ends in one ``error:`` line, exit code 2, no
traceback, and leaves no partial or temporary output behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S

TEMP_MARKERS = (".tmp", ".partial", ".tmp-", ".old-")


def run_module(module: str, *args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` (or a script path ending in .py) in a fresh interpreter."""
    target = [str(REPO_ROOT / module)] if module.endswith(".py") else ["-m", module]
    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TQDM_DISABLE="1", **(env or {}))
    full_env.pop("LANGVGGT4D_DEBUG", None)
    return subprocess.run([sys.executable, *target, *map(str, args)], cwd=cwd or REPO_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_error(r: subprocess.CompletedProcess, *, mentions: str | os.PathLike | None = None) -> str:
    """Exit code 2, exactly one non-empty stderr line starting with ``error: ``, no traceback; returns the line.
    ``mentions``: a text (e.g. the offending file's path) the line must contain."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("INFO ", "WARNING "))]
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    if mentions is not None:
        assert str(mentions) in lines[0], lines[0]
    return lines[0]


def leftovers(root: Path) -> list[Path]:
    """Temporary or partial files and folders under ``root`` (what an interrupted or failed run must not leave)."""
    return [p for p in Path(root).rglob("*") if any(m in p.name for m in TEMP_MARKERS)]


@pytest.fixture
def clean_error():
    return assert_clean_error


H, W = 42, 56


def frames(folder: Path, n: int, size=(W, H), seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i + 1:06d}.png")
    return folder


@pytest.fixture(scope="module")
def decoder_file(tmp_path_factory) -> Path:
    """A tiny decoder of ours (random weights) for the tiny backbone, as one self-describing .safetensors file."""
    from model.decoder import DecoderConfig, SemanticBridgingDecoder
    from model.decoder_io import save_decoder_file
    from model.streamvggt.config import StreamVGGTConfig

    cfg = StreamVGGTConfig.tiny()
    torch.manual_seed(0)
    dec = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=2 * cfg.embed_dim, layers=tuple(cfg.dpt_layers)))
    path = tmp_path_factory.mktemp("dec") / "decoder.safetensors"
    save_decoder_file(dec, path)
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree_diff(a: Path, b: Path) -> list[str]:
    """The files (relative names) whose bytes differ between the folders ``a`` and ``b``, or that one of them lacks:
    ``[]`` when the trees are byte-identical. (A failing test names the files instead of printing their bytes.)"""
    ta, tb = tree_bytes(a), tree_bytes(b)
    return sorted(k for k in ta.keys() | tb.keys() if ta.get(k) != tb.get(k))


