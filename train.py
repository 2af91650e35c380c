"""Train a decoder (single process, or `torchrun --nproc_per_node=N train.py ...`).

Our Semantic Bridging Decoder by default; `--decoder published` trains the published 4DLangVGGT head.

Examples::

    python train.py --scenes data/hypernerf --out runs/hypernerf
    torchrun --nproc_per_node=4 train.py --scenes data/hypernerf --out runs/hypernerf --batch-size 8
    python train.py --scenes data/hypernerf --out runs/hypernerf --resume      # continue from runs/hypernerf/last
    python train.py --scenes data/hypernerf --out runs/pub --decoder published --save-published-pth

Run `python train.py --help` for every option. Expected failures end with one `error: ...` line and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training.trainer import main  # noqa: E402
from utils.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
