"""Shared test fixtures: locating the reference data in ../shared/fixtures (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_fixtures_dir() -> Path | None:
    """``$LANGVGGT4D_FIXTURES`` if set, else ``../shared/fixtures`` beside the checkout; None if absent."""
    env = os.environ.get("LANGVGGT4D_FIXTURES")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "fixtures")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    d = shared_fixtures_dir()
    if d is None:
        pytest.skip("reference fixtures not found: set LANGVGGT4D_FIXTURES or place shared/fixtures beside the repo")
    return d


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    """Tiny models are dominated by thread overhead: one thread is ~100x faster on a loaded 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
