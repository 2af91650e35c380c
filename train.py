"""Train the Semantic Bridging Decoder (single process, or `torchrun --nproc_per_node=N train.py ...`).

Examples::

    python train.py --scenes data/hypernerf --out runs/hypernerf
    torchrun --nproc_per_node=4 train.py --scenes data/hypernerf --out runs/hypernerf --batch-size 8
    python train.py --scenes data/hypernerf --out runs/hypernerf --resume      # continue from runs/hypernerf/last

Run `python train.py --help` for every option.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training.trainer import main  # noqa: E402

if __name__ == "__main__":
    main()
