"""What 'thumbdrop status' shows: the agent's published status and the queue depths, each as far as it is known."""

from __future__ import annotations

import threading
from typing import Any

from agent.config.model import Config
from agent.errors import EXIT_BACKEND, ThumbdropError
from agent.ops.backend import backend_for, running_local
from agent.ops.queues import queue_depths
from agent.service.control_client import read_status
from agent.service.runtime import report_missing_watch_folders, state_dir
from agent.state.status import StatusSnapshot

__all__ = ["DEPTH_TIMEOUT", "agent_status", "is_running", "queue_report", "report_missing_watch_folders"]

DEPTH_TIMEOUT = 8.0  # seconds for the queue depths; the rest of status is local
NOT_RUNNING = ("not running", "stopped")


def agent_status(cfg: Config) -> StatusSnapshot | None:
    """Live from the agent's control socket, else its last status.json, else None (never ran here)."""
    return read_status(state_dir(cfg))


def is_running(snapshot: StatusSnapshot | None) -> bool:
    return snapshot is not None and snapshot.get("state") not in NOT_RUNNING


def queue_report(cfg: Config, *, timeout: float = DEPTH_TIMEOUT) -> tuple[dict[str, Any], bool]:
    """(queue depths or the reason they are unknown, whether the backend was reachable)."""
    if cfg.backend.endpoint_url == "local":
        endpoint = running_local(cfg)
        if endpoint is None:
            # Not unreachable: there is nothing to reach until an agent runs (the embedded backend lives in it).
            return {"error": "the embedded backend is not running (it lives with the agent: 'thumbdrop run')"}, True
        backend = backend_for(cfg, endpoint)
    else:
        backend = backend_for(cfg)
    out: dict[str, Any] = {"backend": backend.describe()}
    if not backend.local:
        out["endpoints"] = {s: backend.where(s) for s in ("s3", "sqs", "sns")}
    found: dict[str, Any] = {}
    refused: list[ThumbdropError] = []

    if cfg.queues.mode == "poll":
        found["queues"] = "poll mode: no queues"

    def query() -> None:
        try:
            for name, entry in queue_depths(cfg, backend).items():
                found[name] = entry if entry is not None else "missing (run 'thumbdrop setup')"
        except ThumbdropError as exc:
            found["error"] = str(exc)
            refused.append(exc)

    # The agent's own state is local and always shown; a backend that accepts connections but never answers
    # must not hold the whole command for botocore's timeouts times its attempts.
    worker = threading.Thread(target=query, name="status-depths", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        out["error"] = f"the backend did not answer within {timeout:.0f} s (queue depths unknown; try 'thumbdrop doctor')"
        return out, False
    out.update(found)
    # Offline, credentials refused, wrong region...: exit 3 as SPEC says (a missing queue is shown, not an error).
    return out, not any(exc.exit_code == EXIT_BACKEND for exc in refused)
