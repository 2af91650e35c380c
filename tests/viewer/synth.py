"""A small synthetic inference output for the viewer's tests, benchmark and screenshot.

``preprocess.make_synthetic`` scene -> ``python -m inference.run --backbone tiny`` with a tiny random decoder that
has a time-sensitive (video) head, a random 512->3 autoencoder and a random 512->6 video autoencoder. Whatever
focal length the random tiny backbone's camera head predicts (older versions: a field of view of 0, i.e. an
``inf`` focal length written as ``null`` in cameras.json), every frame gets a fixed finite one (``focal`` x the
width) in its depth file and in cameras.json, so the tests know the geometry; the frames listed in ``degenerate``
get an infinite focal length instead (cameras.json: ``null``), which the viewer must skip, never crash on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S


def _run(*args: str, timeout: float = HANG_GUARD_S) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TQDM_DISABLE="1")
    r = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"python -m {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")


def fix_cameras(out: Path, focal: float = 0.9, degenerate: tuple[int, ...] = ()) -> None:
    """Give every frame but those at the positions ``degenerate`` a finite focal length (focal x width)."""
    from inference.outputs import OutputLayout, read_depth, write_depth
    from inference.pipeline import write_cameras

    layout = OutputLayout(out)
    keys = layout.field_keys()
    for i, key in enumerate(keys):
        d, meta = read_depth(layout.depth(key))
        K = d["intrinsics"].double().numpy().copy()
        if i in degenerate:
            K[0, 0] = K[1, 1] = np.inf
        else:
            H, W = d["depth"].shape
            K[0, 0] = K[1, 1] = focal * W
            K[0, 2], K[1, 2] = W / 2, H / 2
        write_depth(layout.depth(key), d["depth"], d["conf"], d["valid"], d["extrinsics"].numpy(), K, meta)
    write_cameras(layout, keys)


def make_output(root: Path, frames: int = 6, width: int = 64, height: int = 48, degenerate: tuple[int, ...] = (),
                seed: int = 0) -> dict[str, Path]:
    """Build the scene, models and inference output under ``root``; returns their paths."""
    from model.autoencoder import FeatureAutoencoder, default_dims
    from model.decoder import DecoderConfig, SemanticBridgingDecoder
    from model.decoder_io import save_decoder_file
    from model.streamvggt.config import StreamVGGTConfig

    root = Path(root)
    scene, out = root / "scene", root / "out"
    _run("preprocess.make_synthetic", "--out", str(scene), "--frames", str(frames), "--width", str(width),
         "--height", str(height), "--seed", str(seed), "--no-progress")
    cfg = StreamVGGTConfig.tiny()
    torch.manual_seed(seed)
    dec = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=2 * cfg.embed_dim, layers=tuple(cfg.dpt_layers),
                                                     video_dim=6))
    save_decoder_file(dec, root / "decoder.safetensors")
    FeatureAutoencoder(in_dim=512).save(root / "ae")
    enc, dec_dims = default_dims(512, 6)
    FeatureAutoencoder(in_dim=512, encoder_dims=enc, decoder_dims=dec_dims).save(root / "ae_video")
    _run("inference.run", "--source", str(scene), "--out", str(out), "--decoder", str(root / "decoder.safetensors"),
         "--backbone", "tiny", "--autoencoder", str(root / "ae"), "--device", "cpu", "-q")
    fix_cameras(out, degenerate=degenerate)
    return {"scene": scene, "out": out, "autoencoder": root / "ae", "video_autoencoder": root / "ae_video",
            "decoder": root / "decoder.safetensors"}


def cameras_json(out: Path) -> dict:
    return json.loads((Path(out) / "geometry" / "cameras.json").read_text())
