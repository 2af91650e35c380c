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


@pytest.fixture(autouse=True)
def _single_thread():
    """The evaluator's tensors are tiny: one intra-op thread avoids OpenMP contention on the shared 2-core box."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
