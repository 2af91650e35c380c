"""Synthetic dynamic-scene generator: a tabletop in real 3D (scene description, exact ray casting, renderer,
ground truth and annotation writers).

The command-line entry point is ``python -m preprocess.make_synthetic``.
"""

from .annotations import mask_to_polygons, names_document, rasterize_polygons
from .render import RenderedFrame, render_frame
from .scene import (
    CATALOGUE,
    LEVELS,
    MOVING_EPS,
    TABLECLOTH,
    Region,
    Scene,
    SyntheticConfig,
    SyntheticConfigError,
    build_scene,
)

__all__ = [
    "CATALOGUE", "LEVELS", "MOVING_EPS", "TABLECLOTH", "Region", "RenderedFrame", "Scene", "SyntheticConfig",
    "SyntheticConfigError", "build_scene", "mask_to_polygons", "names_document", "rasterize_polygons", "render_frame",
]
