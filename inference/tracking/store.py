"""Grey frames for the trackers, in memory when they fit a budget, else in a temporary file read back frame by frame
(``os.pread``, no memory map), with a small cache of recent frames: the trackers touch a frame, its neighbour and
the anchors of lost points (at most ``max_gap`` frames back), so a long video's peak memory stays a few frames."""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict

import numpy as np

#: grey videos up to this size stay in memory (2,600 frames of 480 x 854)
DEFAULT_MAX_BYTES = 1 << 30


class DiskFrames:
    """A (T, H, W) uint8 video kept in an unlinked temporary file; ``frames[f]`` reads frame f (cached)."""

    def __init__(self, num_frames: int, hw: tuple[int, int], cache_frames: int = 40, folder: str | None = None):
        self.shape = (int(num_frames), int(hw[0]), int(hw[1]))
        self._size = self.shape[1] * self.shape[2]
        self._file = tempfile.TemporaryFile(dir=folder)  # removed when closed or when the process ends
        self._file.truncate(self._size * self.shape[0])
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(2, int(cache_frames))

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, f: int, frame: np.ndarray) -> None:
        data = np.ascontiguousarray(frame, np.uint8)
        if data.shape != self.shape[1:]:
            raise ValueError(f"frame {f} is {data.shape}, the store holds {self.shape[1:]}")
        os.pwrite(self._file.fileno(), data.tobytes(), self._size * int(f))
        self._cache.pop(int(f), None)

    def __getitem__(self, f: int) -> np.ndarray:
        f = int(f)
        if f < 0:
            f += self.shape[0]
        if f in self._cache:
            self._cache.move_to_end(f)
            return self._cache[f]
        raw = os.pread(self._file.fileno(), self._size, self._size * f)
        frame = np.frombuffer(raw, np.uint8).reshape(self.shape[1:])
        self._cache[f] = frame
        if len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)
        return frame

    def close(self) -> None:
        self._file.close()


def frame_store(num_frames: int, hw: tuple[int, int], max_bytes: int = DEFAULT_MAX_BYTES, cache_frames: int = 40):
    """An in-memory (T, H, W) uint8 array when it fits ``max_bytes``, else a :class:`DiskFrames`."""
    if num_frames * hw[0] * hw[1] <= max_bytes:
        return np.empty((num_frames, *hw), np.uint8)
    return DiskFrames(num_frames, hw, cache_frames)
