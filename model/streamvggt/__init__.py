"""Our implementation of the StreamVGGT backbone (checkpoint-compatible with ``lch01/StreamVGGT``).

Import the model with ``from model.streamvggt.streamvggt import StreamVGGT`` (kept lazy here so that the light
modules — config, layers, aggregator — import without the heads).
"""

from model.streamvggt.config import StreamVGGTConfig

__all__ = ["StreamVGGTConfig"]
