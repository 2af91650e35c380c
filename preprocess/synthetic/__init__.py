"""Synthetic dynamic-scene generator: scene description, renderer and annotation writers.

The command-line entry point is ``python -m preprocess.make_synthetic``.
"""

from .annotations import mask_to_polygons, names_document, rasterize_polygons
from .render import RenderedFrame, make_tablecloth, render_frame
from .scene import (
    CATALOGUE,
    LEVELS,
    TABLECLOTH,
    Region,
    Scene,
    SyntheticConfig,
    SyntheticConfigError,
    build_scene,
)

__all__ = [
    "CATALOGUE", "LEVELS", "TABLECLOTH", "Region", "RenderedFrame", "Scene", "SyntheticConfig",
    "SyntheticConfigError", "build_scene", "make_tablecloth", "mask_to_polygons", "names_document",
    "rasterize_polygons", "render_frame",
]
