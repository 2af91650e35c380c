"""Semantic targets in the 4D LangSplat format (``clip_features/``, ``video_features/``).

- ``scene``: frame listing, image reading, synthetic ground truth, the staged (atomic, resumable) output folder;
- ``levels``: pooling the default level, compacting ids, stacking ``_s.npy`` / ``_f.npy``;
- ``proposals``: region proposals at three granularities (scikit-image, SAM, precomputed ``_s.npy``);
- ``crops``: the masked square crops fed to the CLIP image encoder.

The runnable entry point is ``python -m preprocess.extract_semantics``.
"""

from model.levels import LEVELS as SEMANTIC_LEVELS

LEVELS = ("default", *SEMANTIC_LEVELS)  # the target file's planes: the pooled default, then each level
