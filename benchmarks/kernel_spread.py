"""Measurement (not a test): how far numeric results move across PyTorch's CPU kernel paths and seeds.

The suite's numeric bounds on trained or accumulated results, and on comparisons with reference outputs computed
on another machine, must hold on every CPU a user has (AVX2 laptops, AVX-512 and AMX servers). PyTorch picks its
vectorised kernels at start-up from ``ATEN_CPU_CAPABILITY`` (``default`` = unvectorised, ``avx2``, ``avx512``;
a value above what the CPU has falls back to the CPU's own), so one machine can measure every path. This script
runs each probe in a fresh process per kernel setting (``SETTINGS``) (and per seed where training is involved) and prints, per
quantity, every value and the spread; the bounds in the tests sit outside that spread with the margin stated in
their comments.

    python -m benchmarks.kernel_spread                        # every probe and kernel setting, seeds 0-2
    python -m benchmarks.kernel_spread --probes published_head --json /tmp/spread.json

Probes:
- ``published_head``: our ``PublishedLanguageHead`` against the official outputs in
  ``../shared/fixtures/langhead_tiny_reference.*``, max abs error per output, on 1 and 2 torch threads;
- ``autoencoder``: the oracle round trip of ``tests/preprocess/test_autoencoder.py`` (8-frame synthetic scene,
  tiny CLIP, 400 epochs at lr 1e-3): the worst region cosine after decoding, per seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: kernel settings by name: the environment each child process runs under. ``ATEN_CPU_CAPABILITY`` picks ATen's own
#: vectorised kernels only; matrix products and convolutions go through MKL and oneDNN, which pick theirs from the
#: CPU, so ``avx2-cpu`` caps those too (``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``): what an AVX2-only
#: machine computes, emulated on a newer one.
SETTINGS: dict[str, dict[str, str]] = {
    "native": {},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "avx2-cpu": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
}


def probe_published_head(seed: int) -> dict[str, float]:
    """Max abs error of our published head against the official reference outputs (seed unused: fixed weights)."""
    import torch
    from safetensors.torch import load_file

    from model.published_decoder import PublishedDecoderConfig, PublishedLanguageHead
    from tests.conftest import shared_fixtures_dir

    fixtures = shared_fixtures_dir()
    if fixtures is None:
        raise SystemExit("error: ../shared/fixtures not found: set LANGVGGT4D_FIXTURES")
    tensors = load_file(str(fixtures / "langhead_tiny_reference.safetensors"))
    meta = json.loads((fixtures / "langhead_tiny_reference.json").read_text())
    args, over = meta["constructor"]["args"], meta["constructor"]["dpt_overrides"]
    cfg = PublishedDecoderConfig(dim_in=args["dim_in"], patch_size=args["patch_size"], lang_dim=args["lang_dim"],
                                 features=args["features"], hidden_dim=args["hidden_dim"],
                                 dpt_out_channels=tuple(over["out_channels"]),
                                 layers=tuple(over["intermediate_layer_idx"]))
    weights = {k[len("weights."):]: v for k, v in tensors.items() if k.startswith("weights.")}
    out: dict[str, float] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for case, train in (("a", False), ("b", False), ("a", True)):
            head = PublishedLanguageHead(cfg)  # fresh: a train-mode pass moves the BatchNorm running stats
            head.load_state_dict(weights)
            head.train(train)
            toks = [tensors[f"{case}.tokens.{j}"] for j in range(4)]
            H, W = meta["cases"][case]["image_hw"]
            with torch.no_grad():
                lang, rgb = head(toks, tensors[f"{case}.images"], meta["patch_start_idx"], img_height=H, img_width=W)
            name = f"{case}.train" if train else case
            ref = tensors[f"{name}.lang"]
            out[f"{name}.lang err t{threads}"] = float((lang - ref).abs().max())
            out[f"{name}.lang max|ref|"] = float(ref.abs().max())
            if not train:
                out[f"{name}.rgb err t{threads}"] = float((rgb - tensors[f"{case}.rgb"]).abs().max())
    return out


def probe_autoencoder(seed: int) -> dict[str, float]:
    """Worst region cosine of the oracle autoencoder round trip of tests/preprocess/test_autoencoder.py."""
    import numpy as np
    import torch

    from model.autoencoder import FeatureAutoencoder, decode
    from model.clip import ClipEncoder
    from preprocess import train_autoencoder as ta
    from preprocess.extract_semantics import extract_oracle
    from tests.preprocess.semantics_fixture import synthetic_scene

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        scene = synthetic_scene(Path(tmp) / "scene", frames=8)
        extract_oracle(scene, ClipEncoder.tiny(seed=0), video=True)
        out = Path(tmp) / "ckpt"
        ta.main(["--scenes", str(scene), "--features", "clip_features", "--dim", "3", "--out", str(out),
                 "--epochs", "400", "--batch-size", "64", "--lr", "1e-3", "--device", "cpu", "--no-progress",
                 "--seed", str(seed)])
        model = FeatureAutoencoder.load(out)
        enc = scene / "clip_features-language_features_dim3"
        f = torch.cat([torch.from_numpy(np.load(p)) for p in sorted((scene / "clip_features").glob("*_f.npy"))])
        z = torch.cat([torch.from_numpy(np.load(enc / p.name)) for p in sorted((scene / "clip_features").glob("*_f.npy"))])
        cos = torch.nn.functional.cosine_similarity(decode(model, z), f, dim=-1)
        names = torch.unique(f, dim=0)  # the distinct name embeddings
        nearest = (torch.nn.functional.normalize(decode(model, z), dim=-1) @ names.T).argmax(1)
        right = (names[nearest] - f).abs().amax(1) < 1e-6
    return {"worst cosine": float(cos.min()), "mean cosine": float(cos.mean()), "retrieval": float(right.float().mean())}


PROBES: dict[str, tuple[Callable[[int], dict[str, float]], bool]] = {
    # name: (function, whether seeds matter)
    "published_head": (probe_published_head, False),
    "autoencoder": (probe_autoencoder, True),
}


def _child(probe: str, seed: int) -> None:
    import torch

    values = PROBES[probe][0](seed)
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "values": values}))


def _run(probe: str, setting: str, seed: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")}
    env.update(SETTINGS[setting], PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.kernel_spread", "--child", probe, "--seed", str(seed)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: probe {probe} under the kernel setting {setting} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probes", nargs="+", choices=sorted(PROBES), default=sorted(PROBES),
                   help="which measurements to run (default: all)")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                   help="kernel settings to run under (see SETTINGS); one the CPU lacks is skipped (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="seeds for the probes that train (default: 0 1 2)")
    p.add_argument("--json", type=Path, default=None, help="also write every measured value to this JSON file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.seed)
        return 0
    print(f"machine: {os.cpu_count()} cores; native kernel path: {_native_capability()}", flush=True)
    results: list[dict] = []
    for probe in args.probes:
        seeds = args.seeds if PROBES[probe][1] else [0]
        for setting in args.settings:
            wanted = SETTINGS[setting].get("ATEN_CPU_CAPABILITY")
            for seed in seeds:
                r = _run(probe, setting, seed)
                if wanted and r["capability"].lower() != wanted.lower():
                    print(f"  {probe}: {setting} not available here (ran {r['capability']}), skipped", flush=True)
                    break
                results.append({"probe": probe, "setting": setting, "seed": seed, **r})
                shown = ", ".join(f"{k} = {v:.6g}" for k, v in r["values"].items())
                print(f"  {probe} [{setting}, seed {seed}]: {shown}", flush=True)
        _summary(probe, [r for r in results if r["probe"] == probe])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


def _native_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


def _summary(probe: str, rows: list[dict]) -> None:
    names = sorted({k for r in rows for k in r["values"]})
    print(f"{probe}: spread over {len(rows)} runs")
    for name in names:
        vals = [r["values"][name] for r in rows if name in r["values"]]
        print(f"  {name:28s} min {min(vals):.6g}  max {max(vals):.6g}")


if __name__ == "__main__":
    sys.exit(main())
