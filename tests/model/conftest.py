"""Fixtures for tests/model: the official tiny reference, read once per session (see ``tests.model.reference``)."""

from __future__ import annotations

import pytest

from tests.model.reference import load_reference


@pytest.fixture(scope="session")
def tiny_reference(fixtures_dir) -> dict:
    """{name: tensor} of ``streamvggt_tiny_reference.safetensors``; tests must not modify the tensors in place."""
    return load_reference(fixtures_dir)
