"""Geometry evaluation: video depth (Abs Rel, δ < 1.25 ... after a per-sequence alignment) and camera poses (ATE,
RPE with ``evo``) against TUM / Bonn, Sintel, HyperNeRF and synthetic ground truth, as the field's published
scripts score them. ``python -m eval.geometry``; :func:`evaluate_geometry` for the demo.

Modules: ``depth`` (alignment and metrics), ``poses`` (conventions, evo), ``readers`` (dataset layouts and our
outputs), ``report`` (results files and pictures), ``runner`` (the command).
"""

from __future__ import annotations


def evaluate_geometry(*args, **kwargs):
    """See :func:`eval.geometry.runner.evaluate_geometry` (imported lazily: evo is loaded only when scoring)."""
    from eval.geometry.runner import evaluate_geometry as run

    return run(*args, **kwargs)
