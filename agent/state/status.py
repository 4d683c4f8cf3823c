"""The explicit status object the agent publishes (never derived from log lines)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.state.processes import pid_alive

STATUS_FILE = "status.json"


log = logging.getLogger(__name__)


@dataclass
class Failure:
    name: str  # file or key
    reason: str
    role: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason, "role": self.role, "at": self.at}


class _ChangeLock:
    """The status lock: leaving it marks the status changed (every writer takes it), so that the publisher
    sleeps until there is something new to write instead of waking every second."""

    def __init__(self) -> None:
        self.quiet = threading.Lock()  # for readers: taking it marks nothing
        self.changed = threading.Event()

    def __enter__(self) -> None:
        self.quiet.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.quiet.release()
        self.changed.set()


class Status:
    """Thread-safe counters and state for one agent process."""

    COUNTERS = ("seen", "uploaded", "thumbnailed", "pulled", "skipped", "failed", "ignored")

    def __init__(self, roles: list[str]) -> None:
        self._lock = _ChangeLock()
        self.changed = self._lock.changed  # set on every change; the publisher clears it
        self.roles = list(roles)
        self.state = "starting"  # starting, running, paused, stopping, stopped, error
        self.started_at = time.time()
        self.offline_since: float | None = None
        self.offline_reason = ""
        self.fatal: str | None = None
        self.counts = dict.fromkeys(self.COUNTERS, 0)
        self.active: dict[str, int] = {"uploading": 0, "thumbnailing": 0, "pulling": 0}
        self.pending_local = 0
        self.failures: deque[Failure] = deque(maxlen=50)
        self.recent_thumbnails: deque[str] = deque(maxlen=10)
        self.backend = ""
        # Called with (name, reason, role) on every failure: the agent records them in the journal.
        self.on_failure: Callable[[str, str, str], None] | None = None
        # Per activity (upload, thumbnail, pull): bytes moved and when one last succeeded, for metrics.
        self.bytes: dict[str, int] = {}
        self.last_success: dict[str, float] = {}
        # Called with (activity, seconds, bytes) for every upload/thumbnail/pull done: the metrics' histograms.
        self.on_done: Callable[[str, float, int], None] | None = None

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def fail(self, name: str, reason: str, role: str, *, once: bool = False) -> None:
        """Record a failure. ``once``: not again if ``name`` is already listed with this reason (the puller
        relays a worker's failure marker, which this same agent's worker has usually reported already)."""
        with self._lock:
            if once and any(f.name == name and f.reason == reason for f in self.failures):
                return
            self.counts["failed"] += 1
            self.failures.append(Failure(name, reason, role, time.time()))
        if self.on_failure is not None:
            self.on_failure(name, reason, role)

    def resolved(self, name: str, role: str) -> None:
        """``name`` went through ``role`` after all (a fixed file, a passing cause): drop that role's failures of
        it from the recent list. Per role, because names of different roles can coincide (a source key and the
        thumbnail key the puller refused)."""
        with self._lock:
            if any(f.name == name and f.role == role for f in self.failures):
                kept = [f for f in self.failures if not (f.name == name and f.role == role)]
                self.failures.clear()
                self.failures.extend(kept)

    def begin(self, activity: str) -> None:
        with self._lock:
            self.active[activity] += 1

    def end(self, activity: str) -> None:
        with self._lock:
            self.active[activity] -= 1

    def done(self, activity: str, seconds: float, nbytes: int = 0) -> None:
        """One upload/thumbnail/pull finished in ``seconds``, moving ``nbytes``."""
        with self._lock:
            self.bytes[activity] = self.bytes.get(activity, 0) + nbytes
            self.last_success[activity] = time.time()
        if self.on_done is not None:
            self.on_done(activity, seconds, nbytes)

    def pulled(self, path: str) -> None:
        with self._lock:
            self.counts["pulled"] += 1
            self.recent_thumbnails.append(path)

    def offline(self, reason: str) -> None:
        with self._lock:
            went = self.offline_since is None
            if went:
                self.offline_since = time.time()
            self.offline_reason = reason
        if went:  # once per outage: each role's own retries log at their own pace
            log.warning("backend unreachable: %s; work is kept locally and resumes when it is back", reason)

    def online(self) -> None:
        if self.offline_since is None:
            return  # the usual case (every receive, every upload): nothing changes, nothing to publish
        with self._lock:
            since, self.offline_since = self.offline_since, None
            self.offline_reason = ""
        if since is not None:
            log.info("backend reachable again after %.0f s", time.time() - since)

    def set_state(self, state: str, fatal: str | None = None) -> None:
        with self._lock:
            self.state = state
            if fatal:
                self.fatal = fatal

    def set_pending(self, n: int) -> None:
        if n != self.pending_local:
            with self._lock:
                self.pending_local = n

    def snapshot(self) -> dict[str, Any]:
        with self._lock.quiet:
            return {
                "pid": os.getpid(),
                "state": self.state,
                "roles": self.roles,
                "started_at": self.started_at,
                "updated_at": time.time(),
                "backend": self.backend,
                "offline_since": self.offline_since,
                "offline_reason": self.offline_reason,
                "fatal": self.fatal,
                "counts": dict(self.counts),
                "active": dict(self.active),
                "pending_local": self.pending_local,
                "failures": [f.as_dict() for f in self.failures],
                "recent_thumbnails": list(self.recent_thumbnails),
                "bytes": dict(self.bytes),
                "last_success": dict(self.last_success),
            }

    def publish(self, state_dir: Path) -> None:
        """Write the snapshot atomically for ``thumbdrop status`` (and the tray) to read."""
        write_json_atomic(state_dir / STATUS_FILE, self.snapshot())


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_published(state_dir: Path) -> dict[str, Any] | None:
    """The last status a running agent published, or None when no agent is running."""
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        running = pid_alive(int(data.get("pid", 0)))
    except (TypeError, ValueError):
        running = False
    if not running:
        data["state"] = "not running"
    return data
