"""Regenerate the README's pictures from the demo's trained model (``bash scripts/demo.sh`` output).

    python -m scripts.readme_pictures --demo outputs/demo [--out docs/images] [--no-viewer]

Writes, from what the demo really predicted (a miss shows as a miss):

- ``demo_queries.png``: held-out annotated frames, predicted mask tinted red, ground truth outlined in green, each
  labelled with its query, chosen level and IoU (the evaluator's own overlays of ``<demo>/eval/overlays``);
- ``inference_example.png``: one frame's RGB, its decoder reconstruction, PCA of the small / large fields, the
  predicted depth picture and (when the demo wrote ``inference_gt``) the scene's TRUE depth;
- ``query_example.png``: ``eval.query`` overlays of two queries on three frames, labelled, with a colour bar;
- ``tracks_example.png``: ``eval.query --track`` of "red ball" on the output with the scene's true geometry: the
  tracked points and their trails on the query frame and eight frames on;
- ``viewer.png``: the viser viewer (``python -m viewer.screenshot``) on the demo's output with the scene's
  ground-truth geometry (``<demo>/inference_gt``, labelled GROUND TRUTH in the viewer) when it exists, else on the
  predicted geometry.

Every picture carries a PNG text chunk ``Source`` naming this script and the demo folder, so a test can tell the
README's pictures from hand-made ones.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from utils.cli import UserError, add_logging_args, cli_main, setup_logging_from

SOURCE_KEY = "Source"
SOURCE_TEXT = "scripts/readme_pictures.py from the demo's trained model"


def save_picture(path: Path, image: np.ndarray, demo: Path) -> None:
    """PNG with the provenance text chunk (atomically)."""
    from utils.io import atomic_path

    info = PngImagePlugin.PngInfo()
    info.add_text(SOURCE_KEY, f"{SOURCE_TEXT} ({demo.name})")
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG", pnginfo=info)


def grid(images: list[np.ndarray], cols: int, gap: int = 4) -> np.ndarray:
    """Tile (H, W, 3) uint8 images (resized to the first one's size) in rows of ``cols``, white gaps."""
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for i, img in enumerate(images):
        if img.shape[:2] != (h, w):
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = img[..., :3]
    return out


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def demo_queries(demo: Path, per_query: int = 2) -> np.ndarray:
    """The evaluator's labelled overlays: ``per_query`` held-out frames of each query."""
    folder = next((demo / "eval" / "overlays").glob("*/time_agnostic"), None)
    if folder is None:
        raise UserError("the demo has no evaluation overlays", demo / "eval" / "overlays",
                        "run bash scripts/demo.sh (its evaluation writes them)")
    by_query: dict[str, list[Path]] = {}
    for p in sorted(folder.glob("*.png")):
        by_query.setdefault(re.sub(r"^\d+_", "", p.stem), []).append(p)
    picks = [p for paths in by_query.values() for p in paths[len(paths) // 2:][:per_query]]
    return grid([_load(p) for p in picks], cols=4)


def inference_example(demo: Path) -> np.ndarray:
    """RGB, reconstruction, PCA small / large and depth of the middle frame of the demo's inference."""
    from inference.outputs import OutputLayout

    layout = OutputLayout(demo / "inference")
    keys = layout.field_keys()
    if not keys:
        raise UserError("the demo has no inference output", layout.root, "run bash scripts/demo.sh")
    key = keys[len(keys) // 2]
    meta = json.loads(layout.meta.read_text())
    frame = _load(next(Path(meta["source"]).glob(f"rgb/2x/{key}.*")))
    parts = [frame, _load(layout.rgb(key)), _load(layout.pca("small", key)), _load(layout.pca("large", key))]
    if layout.depth_png(key).exists():
        parts.append(_load(layout.depth_png(key)))
    truth = OutputLayout(demo / "inference_gt").depth_png(key)
    if truth.exists():
        parts.append(_load(truth))
    return grid(parts, cols=len(parts))


QUERIES = ("red ball", "green box")


def text_flags() -> list[str]:
    """The text encoder the demo used: an open_clip file in ckpt/open_clip/, else the weight-free hash encoder."""
    local = sorted(p for ext in ("*.bin", "*.safetensors", "*.pt")
                   for p in (Path(__file__).resolve().parents[1] / "ckpt" / "open_clip").glob(ext))
    return ["--clip", "pretrained", "--clip-weights", str(local[0])] if local else ["--hash-text"]


def query_example(demo: Path, texts: tuple[str, ...] = QUERIES) -> np.ndarray:
    """``eval.query`` on the demo's inference output: labelled overlays of ``texts`` on three frames."""
    from eval.query.run import main as query_main

    out = demo / "readme_queries"
    args = ["--fields", str(demo / "inference"), "--out", str(out), "--no-video", "--no-ply", "-q", "--device", "cpu",
            *text_flags()]
    for t in texts:
        args += ["--text", t]
    query_main(args)
    pictures = []
    for t in texts:
        files = sorted((out / re.sub(r"[^a-z0-9]+", "_", t.lower()).strip("_") / "overlay").glob("*.png"))
        pictures += [_load(f) for f in files[len(files) // 4::max(1, len(files) // 4)][:3]]
    return grid(pictures, cols=3)


def tracks_example(demo: Path, text: str = "red ball", later: int = 8) -> np.ndarray:
    """``eval.query --track`` on the demo's output with the scene's true geometry: the query's tracked points and
    their trails on the query frame and ``later`` frames on (or as far as the video goes)."""
    from eval.query.run import main as query_main

    fields = demo / "inference_gt" if (demo / "inference_gt" / "meta.json").exists() else demo / "inference"
    out = demo / "readme_tracks"
    query_main(["--fields", str(fields), "--out", str(out), "--no-video", "--no-ply", "-q", "--device", "cpu",
                "--text", text, "--track", *text_flags()])
    folder = out / re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    timeline = json.loads((folder / "timeline.json").read_text())
    keys = [r["key"] for r in timeline["frames"]]
    q = keys.index(timeline["query_frame"])
    shown = [q, min(q + later, len(keys) - 1)] if q + later < len(keys) else [max(q - later, 0), q]
    return grid([_load(folder / "trails" / f"{keys[i]}.png") for i in shown], cols=2)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.readme_pictures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="outputs/demo", help="the output folder of bash scripts/demo.sh")
    p.add_argument("--out", default="docs/images", help="where the pictures go")
    p.add_argument("--no-viewer", action="store_true", help="skip the viewer screenshot (needs chromium)")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging_from(args)
    demo, out = Path(args.demo).resolve(), Path(args.out)
    if not demo.is_dir():
        raise UserError("demo output not found", demo, "run bash scripts/demo.sh first (or pass --demo)")
    save_picture(out / "demo_queries.png", demo_queries(demo), demo)
    save_picture(out / "inference_example.png", inference_example(demo), demo)
    save_picture(out / "query_example.png", query_example(demo), demo)
    save_picture(out / "tracks_example.png", tracks_example(demo), demo)
    if not args.no_viewer:
        from viewer.screenshot import main as screenshot

        shot = out / "viewer.png"
        fields = demo / "inference_gt" if (demo / "inference_gt" / "meta.json").exists() else demo / "inference"
        screenshot(["--fields", str(fields), "--out", str(shot), *text_flags(),
                    *[x for q in QUERIES for x in ("--text", q)]])
        save_picture(shot, _load(shot), demo)
    print(f"README pictures written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
