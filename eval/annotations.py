"""Moved to :mod:`preprocess.annotations` (the dataset's annotation readers sit below training and eval).

This name is kept only until every importer has moved; import from ``preprocess.annotations``.
"""

from preprocess.annotations import *  # noqa: F401,F403
from preprocess.annotations import frame_index_from_file_name  # noqa: F401
