"""An agent's status in words, for every face (the tray, the gallery): pure functions over a ``StatusSnapshot``.

No face owns this module, so that the gallery and the tray say the same thing without importing each other.
``snapshot_state`` is the icon state of an agent that answers; ``describe`` the line that goes with it. Every
field is read with ``.get``: a snapshot may come from an agent of another version.
"""

from __future__ import annotations

from agent.state.status import StatusSnapshot

WORKING = ("uploading", "thumbnailing", "transcoding", "pulling")


def snapshot_state(snap: StatusSnapshot) -> str:
    """The icon state (icons.ICON_STATES) of an agent that answered with ``snap``."""
    state = snap.get("state")
    if state == "error" or snap.get("fatal"):
        return "error"
    if state in ("stopping", "stopped", "not running"):
        return "stopped"
    if state == "starting":
        return "offline" if snap.get("offline_since") else "starting"
    if state == "paused":
        return "paused"
    if snap.get("offline_since"):
        return "offline"
    if active_total(snap) > 0 or int(snap.get("pending_local") or 0) > 0:
        return "working"
    return "idle"


def active_total(snap: StatusSnapshot) -> int:
    active = snap.get("active") or {}
    return sum(int(active.get(k) or 0) for k in WORKING)


def done_count(snap: StatusSnapshot) -> int:
    """Images finished from this agent's point of view: pulled if it pulls, else thumbnailed, else uploaded."""
    counts = snap.get("counts") or {}
    roles = snap.get("roles") or []
    for role, counter in (("puller", "pulled"), ("worker", "thumbnailed"), ("uploader", "uploaded")):
        if role in roles:
            return int(counts.get(counter) or 0)
    return 0


def counts_text(snap: StatusSnapshot) -> str:
    """'3 uploading, 120 done, 1 failed' (zero activities left out)."""
    active = snap.get("active") or {}
    parts = [f"{int(active[k])} {k}" for k in WORKING if int(active.get(k) or 0) > 0]
    pending = int(snap.get("pending_local") or 0)
    if pending:
        parts.append(f"{pending} waiting")
    parts.append(f"{done_count(snap)} done")
    failed = int((snap.get("counts") or {}).get("failed") or 0)
    if failed:
        parts.append(f"{failed} failed")
    return ", ".join(parts)


def describe(snap: StatusSnapshot, state: str, *, last_error: str = "") -> str:
    """What the agent is doing, in words, for the icon ``state``; ``last_error`` when it has no ``fatal``."""
    if state == "starting":
        return "Starting the agent…"
    if state == "stopped":
        return "Agent stopping…" if snap.get("state") == "stopping" else "Agent not running"
    if state == "error":
        return f"Error: {short(str(snap.get('fatal') or last_error or 'the agent stopped'))}"
    if state == "offline":
        return f"Offline: {short(str(snap.get('offline_reason') or 'backend unreachable'))}"
    if state == "paused":
        return "Paused"
    missing = [str(m.get("folder", "")) for m in snap.get("missing_folders") or []]
    if missing and state == "idle":  # not "up to date": a drive is unplugged
        return f"Waiting for {short(', '.join(missing))} (missing)"
    if state == "working":
        return "Working: " + counts_text(snap)
    return "Up to date"


def short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
