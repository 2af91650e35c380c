"""Semantic targets in the 4D LangSplat format (``clip_features/``, ``video_features/``).

- ``scene``: frame listing, image reading, synthetic ground truth, the staged (atomic, resumable) output folder;
- ``levels``: pooling the default level, compacting ids, stacking ``_s.npy`` / ``_f.npy``;
- ``proposals``: region proposals at three granularities (scikit-image, SAM, precomputed ``_s.npy``);
- ``crops``: the masked square crops fed to the CLIP image encoder.

The file format itself (names, planes, the one validation) lives in :mod:`preprocess.target_format`. The runnable
entry point is ``python -m preprocess.extract_semantics``.
"""
