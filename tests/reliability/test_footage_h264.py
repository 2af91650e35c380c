"""Phone and camera videos as they come (issue 24): H.264 in MP4 and MKV, with a variable frame rate. OpenCV
cannot write H.264 here, so PyAV (FFmpeg's libx264) makes the files; the project still reads them with OpenCV
(:mod:`preprocess.frames`): every frame, in order, at its size, counted by decoding (a variable-rate file's
container may claim another count), and token extraction and inference accept them."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from preprocess.frames import iter_frames, list_frames
from tests.reliability.test_semantics import run_main

TINY = ("--backbone", "tiny", "--device", "cpu", "--no-progress")
H, W = 42, 56  # even sides: H.264's 4:2:0 chroma needs them
REGULAR_MS = [0, 33, 67, 100, 133, 167, 200, 233]
IRREGULAR_MS = [0, 33, 50, 120, 130, 300, 310, 400]  # frames 17 ms to 170 ms apart, as a phone's timestamps


def level(i: int) -> int:
    """Grey level of frame i: 20 apart, so the order survives the codec's rounding (measured: within 1)."""
    return 20 + 20 * i


def write_h264(path: Path, pts_ms: list[int]) -> Path:
    """A libx264 video (B-frames on, as cameras write) whose frame i is grey ``level(i)`` shown at ``pts_ms[i]``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i, t in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), level(i), np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def stored_timestamps_ms(path: Path) -> tuple[str, list[int]]:
    """(codec name, presentation times in ms) as FFmpeg reads the file back."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [int(round(float(f.pts * stream.time_base) * 1000)) for f in container.decode(stream)]
        return stream.codec_context.name, times


@pytest.mark.parametrize("name,pts", [("cfr.mp4", REGULAR_MS), ("vfr.mp4", IRREGULAR_MS), ("vfr.mkv", IRREGULAR_MS)])
def test_h264_videos_read_every_frame_in_order(tmp_path, name, pts):
    path = write_h264(tmp_path / name, pts)
    codec, times = stored_timestamps_ms(path)
    assert codec == "h264" and times == pts  # the file really is H.264 with these (ir)regular timestamps
    refs = list_frames(path)
    assert [r.key for r in refs] == [f"{i + 1:06d}" for i in range(len(pts))]
    frames = list(iter_frames(refs))
    assert [r.video_frame for r, _ in frames] == list(range(len(pts)))
    for i, (_, rgb) in enumerate(frames):
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        assert abs(float(rgb.mean()) - level(i)) < 6, (i, float(rgb.mean()))  # measured: within 1.0


def test_token_extraction_and_inference_accept_a_variable_rate_h264_video(tmp_path, monkeypatch, capsys,
                                                                          decoder_file):
    from inference.run import main as infer
    from preprocess.extract_tokens import main as extract

    write_h264(tmp_path / "phone.mkv", IRREGULAR_MS[:4])
    monkeypatch.chdir(tmp_path)
    r = run_main(extract, ["phone.mkv", *TINY, "--target-width", "56"], capsys)
    assert r.returncode == 0, r.stderr
    tokens = sorted(p.name for p in (tmp_path / "phone" / "tokens").iterdir())
    assert tokens == [f"{i + 1:06d}.safetensors" for i in range(4)] + ["meta.json"]
    argv = ["--source", "phone.mkv", "--decoder", str(decoder_file), "--out", "out", *TINY[:4], "--no-geometry",
            "--no-pca", "--no-rgb"]
    r = run_main(infer, argv, capsys)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "fields").iterdir()) == tokens[:4]
