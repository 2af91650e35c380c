"""Text queries over fields: text embeddings, LERF relevancy (exact, or interpolated from a latent grid), the
4D LangSplat mask post-processing and level choice, and the pictures (``python -m eval.query``).

Modules: ``run`` (the command and :func:`query_fields`), ``relevancy``, ``masks`` (the published per-level steps),
``batch_masks`` (the same steps on batches of frames), ``decode`` (fields -> CLIP space), ``text`` (encoders).
"""

from eval.query.run import BATCH_FRAMES, FrameImages, build_parser, main, query_fields, slug

__all__ = ["BATCH_FRAMES", "FrameImages", "build_parser", "main", "query_fields", "slug"]
