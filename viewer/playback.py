"""Playback (:class:`Player`): a daemon thread that shows the next frame at the speed slider's rate while *play* is
on."""

from __future__ import annotations

import threading
import time
from typing import Any


class Player:
    """Advances ``viewer`` (:class:`viewer.app.Viewer`) through its frames while its *play* box is ticked, at its
    *speed (fps)*; :meth:`stop` ends the thread."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="viewer-play", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        v = self.viewer
        while not self._stop.is_set():
            speed = max(0.1, float(v.gui_speed.value))
            if v.gui_play.value and v.scene.n > 1:
                t = time.perf_counter()
                v.set_frame((v.frame + 1) % v.scene.n)
                self._stop.wait(max(0.0, 1.0 / speed - (time.perf_counter() - t)))
            else:
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
