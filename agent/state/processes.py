"""Is a process still running? One answer for discovery files, status, temp folders and the tray."""

from __future__ import annotations

import contextlib
import os


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (or belongs to another user); False once gone or a zombie of ours (left for its owner to reap)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    # A zombie (our own child not yet reaped) still "exists". Look without reaping it (WNOWAIT): the
    # subprocess.Popen that owns it must still read its exit code, which a reap here would turn into 0.
    waitid = getattr(os, "waitid", None)
    with contextlib.suppress(ChildProcessError):
        if waitid is not None:
            return waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
