"""Session fixture: the hand-built toy scene, its oracle fields in both layouts (written once)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.eval import synth


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    enc = synth.VocabEncoder()
    scene = synth.write_scene(root, skip={2: ["wooden board"]})
    synth.write_our_fields(root / "out", enc)
    dirs, vdir = synth.write_renders(root / "renders", enc)
    return SimpleNamespace(root=root, scene=scene, enc=enc, out=root / "out", dirs=dirs, vdir=vdir)
