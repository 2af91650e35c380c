"""Interactive 4D viewer for inference outputs: language fields, geometry and live text queries (viser).

``python -m viewer --fields <out>`` (also ``python -m inference.view`` and ``bash scripts/view.sh <out>``);
``python -m viewer.record FILE.viser`` plays a saved recording; ``python -m viewer.screenshot`` takes the README
picture with headless Chromium.

Layering: the viewer sits above the query code (:mod:`eval.query`, :mod:`eval.query.relevancy`, :mod:`eval.query.masks`),
which sits above :mod:`inference`; nothing below imports the viewer. Modules: :mod:`viewer.scene` (what is read
from the output folder), :mod:`viewer.queries` (queries over every frame, reusing the eval code),
:mod:`viewer.app` (the viser scene, GUI and command line), :mod:`viewer.record` (recordings).
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m viewer`` (imported lazily so ``import viewer`` stays cheap)."""
    from viewer.app import main as app_main

    return app_main(argv)
