"""The run folder of ``train.py``: one writer at a time, no stale temporaries, ``metrics.jsonl`` that matches the
checkpoint a run continues from.

- :class:`RunDirLock`: an advisory ``flock`` on the folder itself (no lock file is left behind), so a second
  ``train.py`` writing to the same ``--out`` is refused instead of mixing two runs;
- :func:`clean_stale`: a killed run can leave ``.checkpoint_epoch_<N>.tmp-<pid>/`` (a checkpoint being written),
  ``.checkpoint_epoch_<N>.old-<pid>/`` (the previous folder of that epoch, moved aside just before the new one
  took its place) and ``.<file>.<random>.tmp`` files of :func:`utils.io.atomic_path`; a re-run removes them, and
  moves an ``.old`` folder back when the kill came between the two renames (so ``last`` never names a missing
  folder);
- :func:`restart_metrics`: ``metrics.jsonl`` is rewritten (atomically) to the records of the epochs the run
  starts from (none for a fresh run), so a killed-and-resumed run's file holds one record per epoch, as an
  uninterrupted run's. Records are deterministic except ``seconds`` (wall-clock time of the epoch), which is
  therefore kept only in ``metrics.jsonl``, never in the checkpoints' ``state.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from model.decoder_io import LAST
from utils.cli import UserError
from utils.io import atomic_path

logger = logging.getLogger("train")

METRICS = "metrics.jsonl"
WALL_CLOCK_FIELDS = ("seconds",)
_CKPT = re.compile(r"^checkpoint_epoch_\d+$")
_CKPT_TMP = re.compile(r"^\.(checkpoint_epoch_\d+)\.(tmp|old)-\d+$")
_ATOMIC_TMP = re.compile(r"^\.(last|metrics\.jsonl|checkpoint_epoch_\d+\.pth)\..+\.tmp$")


class RunDirLock:
    """Exclusive advisory lock on the run folder (``flock`` on the directory; released when the process ends,
    even by SIGKILL, and nothing is written). ``acquire`` raises :class:`UserError` when another process holds it."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return
        fd = os.open(self.out_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError("another train.py is writing to this run folder", self.out_dir,
                            "wait for it to finish (or stop it), or pass another --out") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def clean_stale(out_dir: str | os.PathLike) -> list[str]:
    """Remove what a killed run left in ``out_dir`` (see the module doc); returns the names removed or restored.
    Call it holding the :class:`RunDirLock` (no other writer)."""
    out_dir = Path(out_dir)
    done: list[str] = []
    for p in sorted(out_dir.iterdir()):
        m = _CKPT_TMP.match(p.name)
        if m and p.is_dir():
            final = out_dir / m.group(1)
            if m.group(2) == "old" and not final.exists() and (p / "state.json").is_file():
                os.replace(p, final)  # killed between moving the old folder aside and renaming the new one in
                done.append(f"{p.name} -> {final.name}")
            else:
                shutil.rmtree(p)
                done.append(p.name)
        elif _ATOMIC_TMP.match(p.name) and p.is_file():
            p.unlink()
            done.append(p.name)
    return done


def _checkpoints(out_dir: Path) -> dict[int, Path]:
    """Complete checkpoint folders (renamed into place, so complete when their state.json is there), by epoch."""
    out = {}
    for p in out_dir.iterdir():
        if _CKPT.match(p.name) and (p / "state.json").is_file():
            out[int(p.name.rsplit("_", 1)[1])] = p
    return out


def _history(ckpt: Path) -> list[dict[str, Any]] | None:
    try:
        info = json.loads((ckpt / "state.json").read_text())
        return [deterministic(h) for h in info["history"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_point(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``--resume`` continues from: the folder ``last`` names, or a newer one of the same run.

    ``last`` is replaced just after a checkpoint folder is renamed into place, so a kill between the two leaves a
    complete checkpoint newer than ``last`` (or, at the first checkpoint, no ``last`` at all). A newer folder is
    taken when its history continues ``last``'s (so a folder left over from another trajectory, after a resume
    from an earlier epoch, is not); without ``last``, the newest folder. None when the folder holds no checkpoint.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    ckpts = _checkpoints(out_dir)
    last_file = out_dir / LAST
    if not last_file.is_file():
        return ckpts[max(ckpts)] if ckpts else None
    named = out_dir / last_file.read_text().strip()
    hist = _history(named) if (named / "state.json").is_file() else None
    if hist is None:
        return named  # load_checkpoint says what is wrong with it
    best = named
    for epoch in sorted(e for e in ckpts if e > len(hist)):
        later = _history(ckpts[epoch])
        if later is not None and later[:len(hist)] == hist:
            best = ckpts[epoch]
    return best


def existing_run(out_dir: str | os.PathLike) -> str | None:
    """What shows that ``out_dir`` already holds a training run (a ``last`` file, checkpoint folders), or None."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    if (out_dir / LAST).is_file():
        return f"its '{LAST}' file names {(out_dir / LAST).read_text().strip() or '(nothing)'}"
    ckpts = sorted(p.name for p in out_dir.iterdir() if _CKPT.match(p.name) and p.is_dir())
    if ckpts:
        return f"it holds {', '.join(ckpts[:3])}{' ...' if len(ckpts) > 3 else ''}"
    return None


def deterministic(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics record without its wall-clock fields."""
    return {k: v for k, v in record.items() if k not in WALL_CLOCK_FIELDS}


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete records of a ``metrics.jsonl`` (a line cut short by a kill is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def restart_metrics(out_dir: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    """Rewrite ``<out_dir>/metrics.jsonl`` to ``history`` (the records of the epochs a run starts from, as its
    checkpoint holds them), atomically. The ``seconds`` of a record are kept from the old file when the rest of
    the record is the same; a record that differs from the checkpoint's is replaced, with a warning."""
    path = Path(out_dir) / METRICS
    if not history:
        path.unlink(missing_ok=True)
        return
    old = {}
    for rec in read_metrics(path):
        old.setdefault(rec.get("epoch"), rec)
    lines, replaced = [], []
    for rec in history:
        prev = old.get(rec.get("epoch"))
        if prev is not None and deterministic(prev) == rec:
            rec = {**rec, **{k: prev[k] for k in WALL_CLOCK_FIELDS if k in prev}}
        elif prev is not None:
            replaced.append(rec.get("epoch"))
        lines.append(json.dumps(metrics_line(rec)) + "\n")
    if replaced:
        logger.warning("%s: the records of epoch(s) %s differed from the checkpoint's; rewritten from the checkpoint",
                       path, replaced)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))


def metrics_line(record: dict[str, Any]) -> dict[str, Any]:
    """A record in the order ``metrics.jsonl`` writes it (``seconds`` after the training losses)."""
    head = {k: record[k] for k in ("epoch", "step", "train_loss", "train_lang", "seconds") if k in record}
    return {**head, **{k: v for k, v in record.items() if k not in head}}


def append_metrics(out_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record to ``metrics.jsonl`` (a kill mid-line is repaired by :func:`restart_metrics`)."""
    with open(Path(out_dir) / METRICS, "a") as f:
        f.write(json.dumps(metrics_line(record)) + "\n")
