"""The gallery's link to the agent: one thread long-polls the agent's status over the control socket (as the
CLI and the tray do) and feeds a ``Hub``, which the page's Server-Sent Events streams wait on.

With no agent the hub says so (``offline_status``) and the link tries again every few seconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, cast

from agent.errors import ThumbdropError
from agent.gallery.index import Index
from agent.service.control_client import AgentNotRunningError, ControlClient
from agent.state.status import StatusSnapshot
from agent.state.status_words import counts_text, describe, snapshot_state

POLL_WAIT = 3.0  # seconds of one status long poll on the control socket (also how long stop() may wait for it)
RECONNECT = 2.0  # seconds between attempts to reach an agent that is not running
QUEUES_EVERY = 10.0  # seconds between queue depth reads (each is a few SQS calls), while a page is open
QUEUES_RETRY = 2.0  # sooner while the queues are not there yet (the agent is still setting up)


class Hub:
    """The latest status and a short history of events; SSE streams wait on it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=200)
        self._seq = 0
        self.status: dict[str, Any] = offline_status("connecting to the agent…")
        self.closed = False
        self.listeners = 0  # open pages: queue depths are read only while someone looks

    def listen(self, delta: int) -> None:
        with self._cond:
            self.listeners += delta
            self._cond.notify_all()

    def publish(self, event: str, data: dict[str, Any]) -> None:
        with self._cond:
            if event == "status":
                self.status = data
            self._seq += 1
            self._events.append((self._seq, event, data))
            self._cond.notify_all()

    def seq(self) -> int:
        with self._cond:
            return self._seq

    def wait(self, after: int, timeout: float) -> list[tuple[int, str, dict[str, Any]]]:
        with self._cond:
            self._cond.wait_for(lambda: self.closed or self._seq > after, timeout)
            return [e for e in self._events if e[0] > after]

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def offline_status(line: str) -> dict[str, Any]:
    return {"agent": False, "state": "offline", "line": line, "counts": {}, "active": {}, "failures": [], "queues": {}}


def page_status(snapshot: StatusSnapshot, queues: dict[str, Any]) -> dict[str, Any]:
    """What the status bar shows, in the tray's words; only fields meant for the user (no config, no endpoints)."""
    state = snapshot_state(snapshot)
    return {
        "agent": True,
        "state": {"stopped": "offline", "starting": "working"}.get(state, state),
        "line": describe(snapshot, state),
        "summary": counts_text(snapshot),
        "counts": snapshot.get("counts") or {},
        "active": snapshot.get("active") or {},
        "pending_local": snapshot.get("pending_local") or 0,
        "failures": [
            {k: f.get(k) for k in ("name", "reason", "role", "at")} for f in snapshot.get("failures") or [] if isinstance(f, dict)
        ],
        "queues": queues,
        "version": snapshot.get("version"),
    }


class AgentLink:
    """One named thread: long-polls the agent's status over the control socket and feeds the hub."""

    def __init__(self, client: ControlClient, hub: Hub, index: Index) -> None:
        self.client = client
        self.hub = hub
        self.index = index
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gallery-agent-link", daemon=True)
        self._queues: dict[str, Any] = {}
        self._queues_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        version: int | None = None
        pulled: int | None = None
        while not self.stop_event.is_set():
            try:
                args: dict[str, Any] = {} if version is None else {"after": version, "wait": POLL_WAIT}
                snap = self.client.call("status", timeout=POLL_WAIT + 10, **args)
            except AgentNotRunningError:
                version = pulled = None
                self.hub.publish("status", offline_status("No agent running: showing the local folders"))
                self.stop_event.wait(RECONNECT)
                continue
            except ThumbdropError as exc:
                version = None
                self.hub.publish("status", offline_status(f"The agent did not answer: {exc}"))
                self.stop_event.wait(RECONNECT)
                continue
            if not isinstance(snap, dict):
                self.stop_event.wait(RECONNECT)
                continue
            if pulled is not None and int((snap.get("counts") or {}).get("pulled") or 0) < pulled:
                pulled = None  # another agent (a reload): its counters start again from 0
            new_version = snap.get("version") if isinstance(snap.get("version"), int) else None
            if new_version is None:  # an agent without the long poll: poll once a second
                self.stop_event.wait(1.0)
            version = new_version
            now_pulled = int((snap.get("counts") or {}).get("pulled") or 0)
            now_recent = [str(p) for p in snap.get("recent_thumbnails") or []]
            if pulled is not None and now_pulled > pulled:
                self._announce(now_pulled - pulled, now_recent)
            pulled = now_pulled
            self._refresh_queues()
            self.hub.publish("status", page_status(cast(StatusSnapshot, snap), self._queues))

    def _announce(self, delta: int, recent: list[str]) -> None:
        """New thumbnails: each to the page as an item; a 'refresh' when more came than the status lists."""
        fresh = recent[-delta:] if delta <= len(recent) else recent
        for path in fresh:
            item = self.index.item_for(Path(path))
            if item is not None:
                self.hub.publish("thumbnail", item.as_dict())
        if delta > len(recent):
            self.index.invalidate()
            self.hub.publish("refresh", {})

    def _refresh_queues(self) -> None:
        if self.hub.listeners == 0:
            self._queues_at = 0.0  # the next page to open gets them at once
            return
        complete = bool(self._queues) and all(isinstance(q, dict) for q in self._queues.values())
        if time.monotonic() - self._queues_at < (QUEUES_EVERY if complete else QUEUES_RETRY):
            return
        self._queues_at = time.monotonic()
        try:
            found = self.client.call("queues", timeout=15.0)
            self._queues = found if isinstance(found, dict) else {}
        except ThumbdropError as exc:
            self._queues = {"error": str(exc)}
