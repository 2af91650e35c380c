"""The VGGT family: VGGT-1B and PAGE-4D, global attention over every frame of a window.

They share the blocks, RoPE, patch embedding and heads of :mod:`model.streamvggt` (one implementation); this
package adds only what differs: the non-causal forward, PAGE-4D's spatial mask head and its attention bias.
Import the network with ``from model.vggt.vggt import VGGT``.
"""
