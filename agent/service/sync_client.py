"""``thumbdrop sync`` beside a running agent: the agent does it, this process only shows progress and the result.

Two processes on one state dir would both upload and thumbnail the same files (issue 14, item 9). When an agent
answers on the control socket, ``sync`` asks it (``sync``), follows it (``sync-status``, which waits up to a
second for the end) and passes Ctrl-C on (``sync-cancel``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from agent.config.model import Config
from agent.errors import BackendError, ThumbdropError
from agent.service.control_client import AgentNotRunningError, ControlClient, ControlCommandError
from agent.service.sync_ledger import Progress, SyncResult

log = logging.getLogger(__name__)


def sync_through_agent(
    cfg: Config, state_dir: Path, *, timeout: float | None, progress: Progress, stop: threading.Event
) -> SyncResult | None:
    """The running agent's sync result, or None when no agent runs on ``state_dir`` (sync works on its own)."""
    client = ControlClient(state_dir, timeout=10.0)
    try:
        info = client.call("info", timeout=2.0)
    except ThumbdropError:
        return None  # nobody answers (or not our protocol: the agent would refuse to start there anyway)
    pid = info.get("pid", "?") if isinstance(info, dict) else "?"
    if isinstance(info, dict) and info.get("config") not in (None, cfg.origin):
        log.warning("the agent running on %s (pid %s) uses %s: it syncs with its own config", state_dir, pid, info["config"])
    try:
        job = client.call("sync", seconds=timeout)
    except ControlCommandError as exc:
        if exc.code == "unknown-command":
            log.warning("the running agent (pid %s) is an older version without 'sync': syncing from here", pid)
            return None
        raise
    log.info("an agent (pid %s) runs on this state dir: it does this sync", pid)
    cancelled = False
    while True:
        try:
            state = client.call("sync-status", id=job["id"], wait=1.0)
        except AgentNotRunningError as exc:
            raise BackendError(
                f"the agent (pid {pid}) stopped during the sync: {exc}", hint="run 'thumbdrop sync' again"
            ) from None
        for phase, (done, total) in state.get("progress", {}).items():
            progress(phase, int(done), int(total))
        if state.get("done"):
            if state.get("error"):
                raise BackendError(f"the agent's sync failed: {state['error']}", hint="see the agent's log")
            return SyncResult.from_dict(state["result"])
        if stop.is_set() and not cancelled:
            client.call("sync-cancel", id=job["id"])
            cancelled = True
