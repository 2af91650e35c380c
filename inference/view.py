"""``python -m inference.view --fields <out>``: the interactive viewer, launched from the inference package.

Only a launcher: the viewer lives in the top-level :mod:`viewer` package, because the project's layering puts the
viewer above the query code (:mod:`eval.query`), which is above :mod:`inference`; so nothing in ``inference``
imports the viewer at import time, and this module imports it only when run. Same flags as ``python -m viewer``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from viewer.app import main as viewer_main

    return viewer_main(argv)


if __name__ == "__main__":
    sys.exit(main())
