"""The 4D LangSplat target format, in one place: file names, planes, reading and the one validation.

A frame's targets are a pair of ``.npy`` files in a features folder (``clip_features/``, ``video_features/``, or
an autoencoded ``<features>-language_features_dim<k>/``)::

    <key>_s.npy   (P, H, W) float32 region indices, -1 = no region. Semantic targets: P = 4 planes,
                  default | small | middle | large (:data:`PLANES`), one index space over the rows of _f.npy;
                  time-sensitive (video) targets: P = 1.
    <key>_f.npy   (N, D) float feature rows (unit open_clip embeddings, or the autoencoder's latents)

Writers (``preprocess.extract_semantics``, ``preprocess.train_autoencoder``) name their files with
:func:`seg_name` / :func:`feat_name`; readers (training, the evaluator) check a pair with
:func:`target_problems` (the rules of both former validators: finite rows of floats, every index finite, an
integer, and -1 or a row of ``_f.npy``) and take the levels' planes with :data:`LEVEL_PLANES`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from model.levels import LEVELS

SEG_SUFFIX = "_s.npy"
FEAT_SUFFIX = "_f.npy"
#: the planes of a semantic ``_s.npy``: the pooled default level, then each level (``model.levels.LEVELS``)
PLANES: tuple[str, ...] = ("default", *LEVELS)
#: the planes of the levels (small, middle, large) in a semantic ``_s.npy``
LEVEL_PLANES = slice(1, 1 + len(LEVELS))
#: the one plane of a time-sensitive (video) ``_s.npy``
VIDEO_PLANES = slice(0, 1)
SEMANTIC_PLANE_COUNT = len(PLANES)
VIDEO_PLANE_COUNT = 1


def seg_name(key: str) -> str:
    """``<key>_s.npy``."""
    return f"{key}{SEG_SUFFIX}"


def feat_name(key: str) -> str:
    """``<key>_f.npy``."""
    return f"{key}{FEAT_SUFFIX}"


def seg_path(folder: str | os.PathLike, key: str) -> Path:
    return Path(folder) / seg_name(key)


def feat_path(folder: str | os.PathLike, key: str) -> Path:
    return Path(folder) / feat_name(key)


def key_of(path: str | os.PathLike) -> str:
    """The frame key of a ``<key>_s.npy`` or ``<key>_f.npy`` path."""
    name = Path(path).name
    for suffix in (SEG_SUFFIX, FEAT_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise ValueError(f"{name} is not a target file (<key>{SEG_SUFFIX} or <key>{FEAT_SUFFIX})")


def seg_files(folder: str | os.PathLike) -> list[Path]:
    """Sorted ``<key>_s.npy`` files of a features folder."""
    return sorted(Path(folder).glob(f"*{SEG_SUFFIX}"))


def feat_files(folder: str | os.PathLike) -> list[Path]:
    """Sorted ``<key>_f.npy`` files of a features folder."""
    return sorted(Path(folder).glob(f"*{FEAT_SUFFIX}"))


def partner(path: str | os.PathLike) -> Path:
    """The other file of a pair: ``<key>_f.npy`` <-> ``<key>_s.npy``."""
    path = Path(path)
    key = key_of(path)
    return path.with_name(feat_name(key) if path.name.endswith(SEG_SUFFIX) else seg_name(key))


def feature_problem(feats: np.ndarray) -> str | None:
    """Why an ``_f.npy`` array is not (N, D) finite float rows, or None."""
    if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.floating):
        return f"expected (N, D) float feature rows, got shape {feats.shape} of {feats.dtype}"
    if not np.isfinite(feats).all():
        return "NaN or inf in the feature rows"
    return None


def index_problem(seg: np.ndarray, n_rows: int, f_name: str = "_f.npy") -> str | None:
    """Why region indices ``seg`` (any shape) do not all name -1 or a row of a (``n_rows``, D) ``_f.npy``, or
    None: every index must be finite, an integer, and in [-1, n_rows)."""
    values = np.asarray(seg, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        return "NaN or inf in the region indices"
    bad = (values != np.rint(values)) | (values < -1) | (values >= n_rows)
    if bad.any():
        shown = np.unique(values[bad])[:5].tolist()
        return (f"{int(bad.sum())} region indices {shown} are neither -1 nor a row of {f_name} (it has only "
                f"{n_rows} rows: the _s/_f pair is inconsistent)")
    return None


def target_problems(seg: np.ndarray, feats: np.ndarray, planes: slice | None = None,
                    s_path: str | os.PathLike = SEG_SUFFIX, f_path: str | os.PathLike = FEAT_SUFFIX
                    ) -> list[tuple[Path, str]]:
    """The one validation of a target pair's values: ``(file, problem)`` for each problem (empty when fine).
    ``planes``: the planes of ``seg`` that the reader uses (:data:`LEVEL_PLANES`, :data:`VIDEO_PLANES`; None:
    all)."""
    problems = []
    if (p := feature_problem(feats)) is not None:
        problems.append((Path(f_path), p))
    if feats.ndim == 2:
        used = seg if planes is None else seg[planes]
        if (p := index_problem(used, feats.shape[0], Path(f_path).name)) is not None:
            problems.append((Path(s_path), p))
    return problems
