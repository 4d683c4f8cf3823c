"""Where the control socket is, and how to address it: shared by the server (``control``) and ``control_client``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024
# AF_UNIX paths longer than this do not fit sockaddr_un (108 bytes with the NUL, less on BSDs).
_MAX_SUN_PATH = 100


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


@contextlib.contextmanager
def sun_path(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits sockaddr_un, even under a deep (pytest, $HOME) state dir.

    Linux resolves ``/proc/self/fd/N/name`` through an open directory descriptor, so a long
    directory costs nothing; elsewhere the path is used as it is.
    """
    text = str(path)
    if len(text) <= _MAX_SUN_PATH or not Path("/proc/self/fd").is_dir():
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
