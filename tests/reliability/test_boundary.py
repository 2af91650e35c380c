"""One error boundary (issue 24): every command, given a bad input of each kind it reads (our own format errors and
the library errors of numpy, PIL, OpenCV, safetensors, json and torch's weights-only unpickler), ends with exit
code 2, exactly one ``error:`` line that names the offending file, no traceback, and no partial, temporary or lock
file left behind.

The commands run in this process (``main(argv)``, the code path of ``python -m ...``) to keep the walk fast; one
case per kind of failure that escaped before runs in a fresh interpreter too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.reliability.conftest import assert_clean_error, frames, leftovers, run_module
from tests.reliability.test_semantics import run_main
from tests.training.helpers import make_tiny_scene

TINY = ("--backbone", "tiny", "--device", "cpu", "--no-progress")


class Refused:
    """An object no weights file holds: a weights-only load refuses its pickle."""


def _no_leftovers(root: Path) -> None:
    assert leftovers(root) == [], leftovers(root)
    locks = [p for p in root.rglob("*.lock")]
    assert locks == [], locks


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _object_array(p: Path) -> None:
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _bad_npy_header(p: Path) -> None:
    p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': garbage}\n" + b"\0" * 32)


def _refused_pickle(p: Path) -> None:
    torch.save({"weight": torch.zeros(2), "payload": Refused()}, p)


# ------------------------------------------------------------------------------------------- the cases
# Each case prepares files under the work folder (the cwd) and returns (entry point, argv, the path the line names).
def _tokens_main():
    from preprocess.extract_tokens import main

    return main


def _frame_of_another_size(w: Path):
    frames(w / "f", 4)
    Image.new("RGB", (60, 40), (9, 9, 9)).save(w / "f" / "000003.png")
    return _tokens_main(), ["f", *TINY], Path("f/000003.png")


def _truncated_frame(w: Path):
    frames(w / "f", 4)
    _truncate(w / "f" / "000002.png")
    return _tokens_main(), ["f", *TINY], Path("f/000002.png")


def _not_an_image(w: Path):
    frames(w / "f", 4)
    (w / "f" / "000004.png").write_bytes(b"this is no png" * 10)
    return _tokens_main(), ["f", *TINY], Path("f/000004.png")


def _not_a_video(w: Path):
    (w / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    return _tokens_main(), ["clip.mp4", *TINY], Path("clip.mp4")


def _tokens_of_other_settings(w: Path):
    frames(w / "f", 2)
    assert _tokens_main()(["f", *TINY]) == 0
    return _tokens_main(), ["f", *TINY, "--layers", "0", "1"], Path("f/tokens/meta.json")


def _backbone_refused_pickle(w: Path):
    frames(w / "f", 2)
    _refused_pickle(w / "weights.pth")
    return _tokens_main(), ["f", "--backbone", "weights.pth", "--device", "cpu"], Path("weights.pth")


def _backbone_not_safetensors(w: Path):
    frames(w / "f", 2)
    (w / "weights.safetensors").write_bytes(b"\xff" * 64)
    return _tokens_main(), ["f", "--backbone", "weights.safetensors", "--device", "cpu"], Path("weights.safetensors")


def _infer_main():
    from inference.run import main

    return main


def _infer_args(decoder, *extra):
    return ["--source", "f", "--decoder", str(decoder), "--out", "out", "--device", "cpu", *extra]


def _decoder_not_safetensors(w: Path):
    frames(w / "f", 2)
    (w / "dec.safetensors").write_bytes(b"\xff" * 64)
    return _infer_main(), _infer_args("dec.safetensors", "--backbone", "tiny"), Path("dec.safetensors")


def _decoder_refused_pickle(w: Path):
    frames(w / "f", 2)
    _refused_pickle(w / "dec.pth")
    return _infer_main(), _infer_args("dec.pth", "--backbone", "tiny"), Path("dec.pth")


def _cached_token_file_truncated(w: Path, decoder_file: Path):
    frames(w / "f", 3)
    assert _tokens_main()(["f", *TINY]) == 0
    _truncate(w / "f" / "tokens" / "000002.safetensors")
    return _infer_main(), _infer_args(decoder_file), Path("f/tokens/000002.safetensors")


def _cached_token_file_one_token_short(w: Path, decoder_file: Path):
    frames(w / "f", 3)
    assert _tokens_main()(["f", *TINY]) == 0
    one_token_short(w / "f" / "tokens" / "000002.safetensors")
    return _infer_main(), _infer_args(decoder_file), Path("f/tokens/000002.safetensors")


def _semantics_main():
    from preprocess.extract_semantics import main

    return main


def _masks_case(damage: Callable[[Path], None]):
    def case(w: Path):
        frames(w / "scene" / "rgb" / "2x", 3)
        masks = w / "masks"
        masks.mkdir()
        for i in range(1, 4):
            np.save(masks / f"{i:06d}_s.npy", np.zeros((3, 42, 56), np.float32))
        damage(masks / "000002_s.npy")
        return _semantics_main(), ["--scene", "scene", "--mode", "clip", "--masks", "precomputed", "--masks-dir",
                                   "masks", "--clip", "tiny", "--device", "cpu", "--no-progress"], \
            Path("masks/000002_s.npy")
    return case


def _train_main():
    """``train.py``'s entry: the trainer's main under the command-line convention (``run_cli``)."""
    from training.trainer import main
    from utils.cli import run_cli

    return lambda argv: run_cli(main, argv)


TRAIN = ("--decoder", "tiny", "--no-progress", "--threads", "1", "--epochs", "1", "--batch-size", "2")


def _train_coco_truncated(w: Path):
    make_tiny_scene(w / "scene", n_frames=4, eval_frames=(1,))
    coco = w / "scene" / "annotations" / "train" / "_annotations.coco.json"
    coco.parent.mkdir(parents=True)
    coco.write_text('{"images": [{"id": 1, "file_name": ')
    return _train_main(), ["--scenes", "scene", "--out", "run", *TRAIN], coco.relative_to(w)


def _train_names_truncated(w: Path):
    make_tiny_scene(w / "scene", n_frames=4, eval_frames=(1,))
    (w / "scene" / "gt" / "names.json").write_text('{"eval_frames": [1,')
    return _train_main(), ["--scenes", "scene", "--out", "run", *TRAIN], Path("scene/gt/names.json")


def _train_features_object_array(w: Path):
    make_tiny_scene(w / "scene", n_frames=4, eval_frames=(1,))
    bad = w / "scene" / "clip_features-language_features_dim3" / "000003_f.npy"
    _object_array(bad)
    return _train_main(), ["--scenes", "scene", "--out", "run", *TRAIN], bad.relative_to(w)


def _autoencoder_features_object_array(w: Path):
    from preprocess.train_autoencoder import main

    scene = w / "scene"
    feats = scene / "clip_features"
    feats.mkdir(parents=True)
    for i in range(1, 4):
        np.save(feats / f"{i:06d}_f.npy", np.ones((2, 8), np.float32))
        np.save(feats / f"{i:06d}_s.npy", np.zeros((4, 6, 8), np.float32))
    _object_array(feats / "000002_f.npy")
    return main, ["--scenes", "scene", "--out", "ae", "--epochs", "1", "--device", "cpu", "--no-progress"], \
        Path("scene/clip_features/000002_f.npy")


def _query_fields_meta_truncated(w: Path, decoder_file: Path):
    from eval.query.run import main

    frames(w / "f", 2)
    assert _infer_main()(_infer_args(decoder_file, "--backbone", "tiny", "--no-geometry", "--no-pca",
                                     "--no-rgb")) is not None
    (w / "out" / "meta.json").write_text('{"frames": ["000001", ')
    return main, ["--fields", "out", "--text", "a ball", "--hash-text", "--device", "cpu", "--no-video",
                  "--no-ply"], Path("out/meta.json")


CASES = {
    "tokens/frame-of-another-size": _frame_of_another_size,
    "tokens/truncated-png": _truncated_frame,
    "tokens/not-an-image": _not_an_image,
    "tokens/not-a-video": _not_a_video,
    "tokens/other-settings": _tokens_of_other_settings,
    "tokens/backbone-refused-pickle": _backbone_refused_pickle,
    "tokens/backbone-not-safetensors": _backbone_not_safetensors,
    "infer/decoder-not-safetensors": _decoder_not_safetensors,
    "infer/decoder-refused-pickle": _decoder_refused_pickle,
    "infer/cached-token-truncated": _cached_token_file_truncated,
    "infer/cached-token-one-short": _cached_token_file_one_token_short,
    "semantics/masks-object-array": _masks_case(_object_array),
    "semantics/masks-bad-header": _masks_case(_bad_npy_header),
    "semantics/masks-truncated": _masks_case(_truncate),
    "train/coco-truncated": _train_coco_truncated,
    "train/names-truncated": _train_names_truncated,
    "train/features-object-array": _train_features_object_array,
    "autoencoder/features-object-array": _autoencoder_features_object_array,
    "query/fields-meta-truncated": _query_fields_meta_truncated,
}
NEEDS_DECODER = {"infer/cached-token-truncated", "infer/cached-token-one-short", "query/fields-meta-truncated"}


def one_token_short(path: Path) -> None:
    """Rewrite a token file with every layer one token short, its metadata (and so its stated token count and
    checksum) unchanged: a header that is consistent in itself, tensors that are not what the run writes."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k)[:-1].clone() for k in f.keys()}
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_naming_the_file(name, tmp_path, monkeypatch, capsys, decoder_file):
    monkeypatch.chdir(tmp_path)
    case = CASES[name]
    main, argv, named = case(tmp_path, decoder_file) if name in NEEDS_DECODER else case(tmp_path)
    r = run_main(main, argv, capsys)
    assert_clean_error(r, mentions=named)
    _no_leftovers(tmp_path)
    assert not list(tmp_path.rglob(".clip_features.partial"))
    if name == "tokens/frame-of-another-size":  # found from the image headers, before anything is written
        assert not (tmp_path / "f" / "tokens").exists()


@pytest.mark.parametrize("name", ["tokens/frame-of-another-size", "semantics/masks-object-array"])
def test_in_a_fresh_interpreter(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main, argv, named = CASES[name](tmp_path)
    module = {"tokens": "preprocess.extract_tokens", "semantics": "preprocess.extract_semantics"}[name.split("/")[0]]
    r = run_module(module, *argv, cwd=tmp_path)
    assert_clean_error(r, mentions=named)
    _no_leftovers(tmp_path)


def test_json_and_npy_helpers_name_the_file(tmp_path):
    from utils.cli import BadFileError
    from utils.io import load_npy, read_json

    bad = tmp_path / "x.json"
    bad.write_text('{"a": ')
    with pytest.raises(BadFileError) as e:
        read_json(bad)
    assert str(e.value).startswith("not valid JSON (") and f"({bad})" in str(e.value)
    arr = tmp_path / "x.npy"
    _object_array(arr)
    with pytest.raises(BadFileError) as e:
        load_npy(arr)
    assert f"({arr})" in str(e.value) and "object array" in str(e.value)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(BadFileError, match="not a text file"):
        read_json(latin)


def test_a_library_error_outside_a_read_keeps_its_traceback():
    """``reading`` names files; it does not turn programming errors into user errors."""
    from utils.cli import reading

    with pytest.raises(ZeroDivisionError):
        with reading("x.npy"):
            _ = 1 / 0


def _cv2_error(path: Path) -> None:
    import cv2

    cv2.cvtColor(np.zeros((2, 2, 5), np.uint8), cv2.COLOR_BGR2RGB)  # OpenCV's own assertion: cv2.error


def _pil_truncated(path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, "PNG")
    _truncate(path)
    with Image.open(path) as im:
        im.load()


def _npy_truncated(path: Path) -> None:
    np.save(path, np.zeros((50, 50), np.float32))
    _truncate(path)
    np.load(path, allow_pickle=False)


def _torch_refused(path: Path) -> None:
    _refused_pickle(path)
    torch.load(path, weights_only=True)


def _safetensors_garbage(path: Path) -> None:
    from safetensors.torch import load_file

    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    load_file(path)


@pytest.mark.parametrize("fail,what", [(_cv2_error, "OpenCV cannot decode it"), (_pil_truncated, "truncated"),
                                       (_npy_truncated, "unreadable"), (_torch_refused, "refused"),
                                       (_safetensors_garbage, "not a readable safetensors file")],
                         ids=["cv2", "pil-truncated", "npy-truncated", "torch-weights-only", "safetensors"])
def test_reading_names_the_file_for_each_librarys_error(tmp_path, fail, what):
    from utils.cli import BadFileError, reading

    path = tmp_path / "the-file.npy"  # (np.save adds .npy to a name without it)
    with pytest.raises(BadFileError) as e:
        with reading(path, "fix it"):
            fail(path)
    assert str(e.value).startswith(what) and str(e.value).endswith(f" ({path}): fix it"), str(e.value)
