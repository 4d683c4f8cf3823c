"""Atomic file writes: one temp-file-then-rename helper, one temp naming scheme.

A reader never sees half a file: the data goes to a temp file beside the target and is renamed over it. The
temp name carries the writer's pid (``.<name>.thumbdrop-tmp-<pid>-<random>``), so a cleaner can tell a temp
file whose writer died from one being written now (``abandoned_temp_file``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal, overload

from agent.state.processes import pid_alive

TMP_MARK = ".thumbdrop-tmp-"
# A temp file without a writer's pid is abandoned once it has not changed for this long; one whose pid runs
# (perhaps reused by another program) only after a day: a live download writes every few seconds.
STALE_TEMP_SECONDS = 3600.0
STALE_TEMP_LIVE_PID_SECONDS = 86400.0


def temp_prefix(path: Path) -> str:
    """The prefix of a temp file for ``path``: hidden, short enough for any file system, with our pid."""
    return f".{path.name[:40]}{TMP_MARK}{os.getpid()}-"


@overload
def atomic_file(
    path: Path, mode: Literal["wb"] = "wb", *, perms: int | None = None, fsync: bool = False
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
@overload
def atomic_file(
    path: Path, mode: Literal["w"], *, perms: int | None = None, fsync: bool = False
) -> contextlib.AbstractContextManager[IO[str]]: ...
def atomic_file(path: Path, mode: str = "wb", *, perms: int | None = None, fsync: bool = False):  # type: ignore[no-untyped-def]
    """Open a temp file beside ``path``; on a clean exit it replaces ``path``, on an error it is removed.

    ``perms`` is applied before the rename (the temp file is created 0600, so a private file is never
    readable by others, even for a moment); ``fsync`` makes the data durable before the rename.
    """
    return _atomic_file(Path(path), mode, perms, fsync)


@contextlib.contextmanager
def _atomic_file(path: Path, mode: str, perms: int | None, fsync: bool) -> Iterator[IO[bytes] | IO[str]]:
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as out:
            yield out
            out.flush()
            if fsync:
                os.fsync(out.fileno())
        if perms is not None:
            os.chmod(tmp, perms)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, data: str | bytes, *, perms: int | None = None, fsync: bool = False) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; see ``atomic_file``."""
    if isinstance(data, str):
        with atomic_file(path, "w", perms=perms, fsync=fsync) as out:
            out.write(data)
    else:
        with atomic_file(path, "wb", perms=perms, fsync=fsync) as bout:
            bout.write(data)


def abandoned_temp_file(path: str, name: str, now: float | None = None) -> bool:
    """Whether no live writer owns this temp file: its writer's pid is gone, or (no pid in the name: an older
    version wrote it, or the pid was reused) it has not changed for a long time."""
    now = time.time() if now is None else now
    pid_text, sep, _rest = name.rsplit(TMP_MARK, 1)[1].partition("-")
    try:
        idle = now - os.lstat(path).st_mtime
    except OSError:
        return False  # renamed into place or removed meanwhile
    if sep and pid_text.isdigit() and not pid_alive(int(pid_text)):
        return True
    return idle > (STALE_TEMP_LIVE_PID_SECONDS if sep and pid_text.isdigit() else STALE_TEMP_SECONDS)
