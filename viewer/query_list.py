"""The queries kept in the viewer (:class:`QueryList`): each with its own colour, show / hide and remove
widgets, computed on one query thread (the frame on screen first) through :class:`viewer.queries.QueryEngine`."""

from __future__ import annotations

import concurrent.futures
import html
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("viewer")

QUERY_COLORS = ((255, 0, 255), (0, 230, 255), (255, 140, 0), (140, 255, 0), (255, 255, 0), (0, 110, 255),
                (255, 0, 90), (0, 255, 150))


@dataclass
class Query:
    """A query kept in the viewer: its text, colour, whether it is shown and/or time-sensitive, its result."""

    text: str
    color: tuple[int, int, int]
    visible: bool = True
    state: bool = False
    result: object = None  # viewer.queries.QueryResult
    handles: list = field(default_factory=list)
    status: object = None


class QueryList:
    """The kept queries of ``viewer`` (:class:`viewer.app.Viewer`; ``items`` is its ``queries`` list): adding one
    (or re-running a kept text), its widgets, removing it, recomputing all after a level / threshold change. The
    results recolour the viewer's points batch by batch (``viewer.refresh_colors``) and fill its timeline."""

    def __init__(self, viewer: Any, items: list[Query]) -> None:
        self.viewer = viewer
        self.items = items
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="viewer-query")

    def submit(self, text: str, state: bool, wait: bool = False) -> concurrent.futures.Future | None:
        """Run the query ``text`` over every frame on the query thread, kept with its own colour (a kept text is
        shown again and recomputed); returns its future (``wait`` blocks until every frame is done)."""
        existing = next((q for q in self.items if q.text == text), None)
        if existing is not None:
            existing.visible = True
            fut = self.worker.submit(self._run, existing)
        else:
            q = Query(text, QUERY_COLORS[len(self.items) % len(QUERY_COLORS)], state=state)
            self.items.append(q)
            self._add_widgets(q)
            fut = self.worker.submit(self._run, q)
        if wait:
            fut.result()
        return fut

    def _add_widgets(self, q: Query) -> None:
        v = self.viewer
        gui = v.server.gui
        with v.gui_query_folder:
            show = gui.add_checkbox(q.text, initial_value=True)
            color = gui.add_rgb("colour", initial_value=q.color)
            status = gui.add_markdown("*computing…*")
            remove = gui.add_button("remove")
        q.handles = [show, color, status, remove]
        q.status = status

        def on_show(_: Any) -> None:
            q.visible = bool(show.value)
            v.refresh_colors()
            v.update_timeline()

        def on_color(_: Any) -> None:
            q.color = tuple(int(c) for c in color.value)
            v.refresh_colors()
            v.update_timeline()

        show.on_update(on_show)
        color.on_update(on_color)
        remove.on_click(lambda _: v.remove_query(q))

    def remove(self, q: Query) -> None:
        with self.viewer.lock:
            if q in self.items:
                self.items.remove(q)
            for h in q.handles:
                h.remove()

    def _order(self) -> list[str]:
        """Frames in the order a query computes them: the one on screen first, then onwards (wrapping)."""
        keys, frame = self.viewer.scene.keys, self.viewer.frame
        return keys[frame:] + keys[:frame]

    def _run(self, q: Query) -> None:
        v = self.viewer
        level, thr = v.gui_level.value, float(v.gui_threshold.value)

        def on_batch(res: Any, batch: list[str]) -> None:
            q.result = res
            if q in self.items:
                v.refresh_colors([k for k in batch if k in v.clouds])
            if q.status is not None:
                q.status.content = f"{len(res.frames)}/{v.scene.n} frames, {res.seconds:.2f} s"

        try:
            res = v.engine.run(q.text, level=level, threshold=thr, order=self._order(), on_batch=on_batch,
                               cancelled=lambda: q not in self.items)
        except Exception as e:  # shown in the page, never kills the server
            log.exception("query %r failed", q.text)
            if q.status is not None:
                q.status.content = f"**failed:** {html.escape(str(e))}"
            return
        q.result = res
        extra = ""
        if q.state and q in self.items:
            try:
                _, holds = v.engine.state(res)
                extra = f"; state holds in {sum(holds.values())}/{len(holds)} frames"
            except Exception as e:
                log.warning("time-sensitive score of %r failed: %s", q.text, e)
                extra = f"; time-sensitive score failed: {html.escape(str(e))}"
        levels = [v.scene.levels[fr.level] for fr in res.frames.values()]
        counts = ", ".join(f"{lvl} {levels.count(lvl)}" for lvl in v.scene.levels if levels.count(lvl))
        if q.status is not None:
            q.status.content = f"{len(res.frames)}/{v.scene.n} frames in {res.seconds:.2f} s ({counts}){extra}"
        v.update_timeline()

    def rerun(self, wait: bool = False) -> None:
        """Recompute every kept query (after a level or threshold change)."""
        futs = [self.worker.submit(self._run, q) for q in list(self.items)]
        if wait:
            for f in futs:
                f.result()

    def wait(self) -> None:
        """Block until every submitted query is done."""
        self.worker.submit(lambda: None).result()

    def close(self) -> None:
        self.worker.shutdown(wait=True, cancel_futures=True)
