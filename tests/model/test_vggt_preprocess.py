"""The official PAGE-4D / VGGT preprocessing of the fixture's two PNGs (a landscape RGB and a portrait RGBA), in
both modes, reproduced bit for bit by our frame decoder and crop record."""

from __future__ import annotations

import pytest
import torch

from preprocess.crop import preprocess_images
from preprocess.frames import FrameRef, read_frame_published
from tests.model.reference import load_page4d_reference


@pytest.fixture(scope="module")
def pngs(fixtures_dir, tmp_path_factory):
    ref = load_page4d_reference(fixtures_dir)
    folder = tmp_path_factory.mktemp("png")
    paths = []
    for i in range(2):
        p = folder / f"png{i}.png"
        p.write_bytes(ref[f"preprocess.png{i}.file"].numpy().tobytes())
        paths.append(p)
    return ref, paths


def test_decoding_gives_the_official_pixels_and_white_compositing(pngs):
    ref, paths = pngs
    rgb0 = read_frame_published(FrameRef(key="0", index=0, path=paths[0]))
    assert torch.equal(torch.from_numpy(rgb0), ref["preprocess.png0.pixels"])
    assert ref["preprocess.png1.pixels"].shape[-1] == 4  # RGBA: composited onto white by the reader


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_both_modes_are_bit_exact(pngs, mode):
    ref, paths = pngs
    rgbs = [read_frame_published(FrameRef(key=str(i), index=i, path=p)) for i, p in enumerate(paths)]
    ours = preprocess_images(rgbs, mode)
    official = ref[f"preprocess.{mode}"]
    assert ours.dtype == official.dtype and ours.shape == official.shape
    assert torch.equal(ours, official)
