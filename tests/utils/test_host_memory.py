"""utils.host_memory: freed batch-sized blocks stay in the heap for the next batch (glibc), in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import ctypes, sys
import numpy as np
from utils.host_memory import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
block = np.ones(20 << 20, np.uint8)  # one batch-sized block, written
del block
print(int(applied), libc.mallinfo2().fordblks)  # free bytes kept in the heap
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_blocks_stay_in_the_heap_only_when_asked():
    def probe(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.split()
        return int(out[0]), int(out[1])

    applied, kept = probe("keep")
    assert applied == 1 and kept >= 20 << 20
    applied, kept = probe("default")
    assert applied == 0 and kept < 20 << 20  # glibc's default: the block was an mmap, unmapped when freed


def test_idempotent():
    from utils.host_memory import keep_freed_memory

    assert keep_freed_memory() == keep_freed_memory()
