"""One writer per output folder: an advisory lock file that frees itself when its owner dies.

Every command that writes an output folder holds ``.<folder name>.lock`` beside it (e.g. ``<scene>/.tokens.lock``)
for the whole run (:func:`output_lock`); beside, not inside, so that a folder staged elsewhere and renamed into
place (``extract_semantics``) is covered too, and two commands writing different folders of one scene never wait
for each other. A second process started on the same folder refuses at once with one line naming the owner
(``another run (pid 1234) is writing this folder``), so two runs never interleave their writes. The lock is
``fcntl.flock`` on the file, which the kernel releases when the owning process exits or is killed: a lock file
left by a dead process (``kill -9``, a crash, a power cut) is stale and simply taken over. The file holds the
owner's pid (for the message) and is removed when the run ends, so a finished folder holds only the outputs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from utils.cli import UserError


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of output folder ``folder``: ``<parent>/.<name>.lock``."""
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}.lock"


class OutputLockedError(UserError, BlockingIOError):
    """Another live process holds the lock of this output folder."""


def _owner(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    return f"pid {text}" if text.isdigit() else "another process"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, what: str = "this folder") -> Iterator[Path]:
    """Hold the lock of ``folder`` (its parent is created if missing) while the block runs; yields the lock file.

    Raises :class:`OutputLockedError` when another live process holds it. Re-entrant within one process is not
    needed by any command and not supported (a second ``output_lock`` on the same folder in the same process
    refuses too, as flock locks belong to open files)."""
    folder = Path(folder)
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only or full disk, no permission: the folder is what cannot be written
            e.filename = str(folder)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise OutputLockedError(f"another run ({_owner(path)}) is writing {what}", folder,
                                    "wait for it to finish, or stop it; a lock left by a dead process is taken "
                                    "over automatically") from None
        # the previous owner may have removed the file between our open and our lock: lock the file on disk
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding the lock: a waiting process then re-opens a fresh file
        os.close(fd)
