"""Put a synthetic scene's TRUE depth and cameras where an inference output's predicted geometry goes.

``python -m inference.ground_truth --fields <out> --scene <scene> [--out <new>]``

Reads ``<scene>/gt/geometry/`` (written by ``python -m preprocess.make_synthetic`` in exactly the format of an
inference output's ``geometry/``) and writes, into ``<new>`` (a copy of ``<out>``; or into ``<out>`` itself when
``--out`` is not given):

- ``geometry/depth/<key>.safetensors`` and ``geometry/cameras.json``: the ground-truth files, byte for byte
  (``cameras.json`` carries ``"ground_truth": true`` and a convention that says so);
- ``geometry/points/<key>.ply`` and ``geometry/fused.ply``: the true points, coloured by the scene's frames, with
  a ``GROUND TRUTH`` comment; ``depth/<key>.png``: the true depth as a picture;
- ``meta.json``: ``"geometry": {"ground_truth": true, "source": ...}``, which the viewer shows as a label.

Everything that reads predicted geometry (the viewer, PLY consumers, lifting points to 3D) then reads the truth
unchanged. The fields, RGB and PCA pictures are the model's, untouched. Use it with a random backbone (whose
geometry means nothing) to see the language fields in the scene's real 3D layout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from inference.geometry import frame_points
from inference.outputs import OutputLayout, read_depth
from inference.pipeline import write_fused
from inference.ply import write_ply
from inference.visualize import depth_picture, save_png
from utils.cli import UserError, add_logging_args, cli_main, setup_logging_from
from utils.io import atomic_path, save_json_atomic

log = logging.getLogger(__name__)

GROUND_TRUTH_LABEL = "GROUND TRUTH geometry of the synthetic scene (not predicted)"


def is_ground_truth(layout: OutputLayout) -> bool:
    """True when the output's geometry was replaced by a scene's ground truth (meta.json or cameras.json says so)."""
    for path in (layout.meta, layout.cameras):
        if path.exists():
            try:
                doc = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            geo = doc.get("geometry") if path == layout.meta else doc
            if isinstance(geo, dict) and geo.get("ground_truth") is True:
                return True
    return False


def _check(fields: Path, scene: Path) -> list[str]:
    layout = OutputLayout(fields)
    if not layout.meta.exists():
        raise UserError("not an inference output (no meta.json)", fields, "pass the folder python -m inference.run "
                        "wrote")
    gt = scene / "gt" / "geometry"
    if not (gt / "cameras.json").exists():
        raise UserError("no ground-truth geometry (gt/geometry/cameras.json)", scene,
                        "make the scene with python -m preprocess.make_synthetic (it writes gt/geometry/)")
    meta = json.loads(layout.meta.read_text())
    keys = list(meta.get("frames", []))
    missing = [k for k in keys if not (gt / "depth" / f"{k}.safetensors").exists()]
    if not keys or missing:
        raise UserError(f"the scene has no ground truth for frame(s) {missing[:3] or '(none listed)'}", gt,
                        "pass the scene the inference output was made from")
    d, _ = read_depth(gt / "depth" / f"{keys[0]}.safetensors", names=("valid",))
    hw = tuple(d["valid"].shape)
    if meta.get("height") and (meta["height"], meta["width"]) != hw:
        raise UserError(f"frame size {meta['height']}x{meta['width']} differs from the scene's {hw[0]}x{hw[1]}",
                        fields, "pass the scene the inference output was made from")
    return keys


def apply_ground_truth(fields: Path, scene: Path, fused_max_points: int = 2_000_000) -> dict:
    """Replace ``fields``' geometry with ``scene``'s ground truth in place (see the module docstring)."""
    keys = _check(fields, scene)
    layout = OutputLayout(fields)
    gt = scene / "gt" / "geometry"
    points = 0
    for key in keys:
        src = gt / "depth" / f"{key}.safetensors"
        with atomic_path(layout.depth(key)) as tmp:
            tmp.write_bytes(src.read_bytes())
        d, _ = read_depth(src)
        depth, conf, valid = d["depth"].numpy(), d["conf"].numpy(), d["valid"].numpy().astype(bool)
        save_png(layout.depth_png(key), depth_picture(depth, conf))
        bgr = cv2.imread(str(scene / "rgb" / "2x" / f"{key}.png"))
        rgb = (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr is not None
               else np.full(depth.shape + (3,), 160, np.uint8))
        pts = frame_points(depth, conf, d["intrinsics"].numpy(), d["extrinsics"].numpy(), rgb, valid=valid)
        write_ply(layout.points(key), pts["xyz"], pts["rgb"], extra={"confidence": pts["conf"]},
                  comment=f"frame {key} GROUND TRUTH world points of the synthetic scene (metres, table frame)")
        points += len(pts["xyz"])
    with atomic_path(layout.cameras) as tmp:
        tmp.write_bytes((gt / "cameras.json").read_bytes())
    fused = write_fused(layout, keys, fused_max_points)
    meta = json.loads(layout.meta.read_text())
    meta["geometry"] = {"ground_truth": True, "label": GROUND_TRUTH_LABEL, "source": str(gt.resolve())}
    meta["camera_convention"] = json.loads((gt / "cameras.json").read_text()).get("convention")
    save_json_atomic(meta, layout.meta)
    return {"frames": len(keys), "points": points, "fused_points": fused}


def use_ground_truth(fields: str | os.PathLike, scene: str | os.PathLike, out: str | os.PathLike | None = None,
                     overwrite: bool = False, fused_max_points: int = 2_000_000) -> Path:
    """Write ``fields`` with ``scene``'s true geometry into ``out`` (a new copy; in place when None). The copy is
    built beside ``out`` and renamed at the end: a failure leaves nothing half-written."""
    fields, scene = Path(fields), Path(scene)
    if out is None:
        apply_ground_truth(fields, scene, fused_max_points)
        return fields
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError("the output folder exists and is not empty", out, "pass --overwrite or another --out")
    _check(fields, scene)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        shutil.copytree(fields, tmp / "o")
        apply_ground_truth(tmp / "o", scene, fused_max_points)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp / "o", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inference.ground_truth",
                                description="Replace an inference output's predicted depth/cameras/points with a "
                                            "synthetic scene's ground truth (labelled as such).")
    p.add_argument("--fields", required=True, type=Path, help="inference output folder (python -m inference.run)")
    p.add_argument("--scene", required=True, type=Path,
                   help="the synthetic scene it was made from (python -m preprocess.make_synthetic; has gt/geometry/)")
    p.add_argument("--out", type=Path, default=None,
                   help="write a labelled copy here (default: change --fields in place)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists and is not empty")
    p.add_argument("--fused-max-points", type=int, default=2_000_000, help="vertex budget of geometry/fused.ply")
    add_logging_args(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    out = use_ground_truth(args.fields, args.scene, args.out, args.overwrite, args.fused_max_points)
    print(f"{out}: geometry replaced by the ground truth of {args.scene} ({GROUND_TRUTH_LABEL})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
