"""langvggt4d's Python API (``docs/architecture.md`` §2, the top layer below the commands): see :mod:`langvggt4d.api`.

    system = LangVGGT4D.from_pretrained(backbone="tiny", decoder="runs/demo", autoencoder="ckpt/autoencoder/demo")
    out = system.predict("data/synthetic/demo")
"""

from langvggt4d.api import LangVGGT4D, Prediction, QueryResult

__all__ = ["LangVGGT4D", "Prediction", "QueryResult"]
