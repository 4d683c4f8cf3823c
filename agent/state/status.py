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
from typing import TypedDict, cast

from agent.state.files import atomic_write
from agent.state.processes import pid_alive
from agent.text import printable

STATUS_FILE = "status.json"
# The mode a plain open() gives (0666 less the umask, read once at import: reading it means setting it): files
# others may read keep it, while atomic_write's temp files start 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
UMASK_PERMS = 0o666 & ~_UMASK


log = logging.getLogger(__name__)


class FailureEntry(TypedDict):
    name: str  # the file or key, printable
    reason: str
    role: str
    at: float


class MissingFolder(TypedDict):
    folder: str
    detail: str


class StatusSnapshot(TypedDict):
    """The agent's status as the control socket, status.json, ``thumbdrop status``, the supervisor, the metrics,
    the tray and the gallery see it. JSON-safe. Readers of a published file from another version use ``.get``."""

    pid: int
    version: int
    state: str  # starting, running, paused, stopping, stopped, error; "not running" when read from a dead agent
    roles: list[str]
    started_at: float
    updated_at: float
    backend: str
    offline_since: float | None
    offline_reason: str
    fatal: str | None
    counts: dict[str, int]  # Status.COUNTERS
    failed_total: int
    active: dict[str, int]  # uploading, thumbnailing, transcoding, pulling
    pending_local: int
    failures: list[FailureEntry]
    missing_folders: list[MissingFolder]
    recent_thumbnails: list[str]
    bytes: dict[str, int]
    last_success: dict[str, float]


@dataclass
class Failure:
    name: str  # file or key
    reason: str
    role: str
    at: float

    def as_dict(self) -> FailureEntry:
        return {"name": self.name, "reason": self.reason, "role": self.role, "at": self.at}


class _ChangeLock:
    """The status lock: leaving it marks the status changed (every writer takes it), so that the publisher
    sleeps until there is something new to write instead of waking every second."""

    def __init__(self) -> None:
        self.quiet = threading.Lock()  # for readers: taking it marks nothing
        self.changed = threading.Event()
        # Every change bumps ``version`` and wakes ``cond`` (the control socket's status long-poll).
        self.cond = threading.Condition(self.quiet)
        self.version = 0

    def __enter__(self) -> None:
        self.quiet.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.version += 1
        self.cond.notify_all()
        self.quiet.release()
        self.changed.set()


class Status:
    """Thread-safe counters and state for one agent process."""

    COUNTERS = ("seen", "uploaded", "thumbnailed", "previewed", "pulled", "skipped", "failed", "ignored", "duplicates")

    def __init__(self, roles: list[str], *, one_shot: bool = False) -> None:
        self._lock = _ChangeLock()
        self.changed = self._lock.changed  # set on every change; the publisher clears it
        self.roles = list(roles)
        self.one_shot = one_shot  # a command such as sync, which ends instead of waiting for the backend
        self.state = "starting"  # starting, running, paused, stopping, stopped, error
        self.started_at = time.time()
        self.offline_since: float | None = None
        self.offline_reason = ""
        self.fatal: str | None = None
        self.counts = dict.fromkeys(self.COUNTERS, 0)
        self.active: dict[str, int] = {"uploading": 0, "thumbnailing": 0, "transcoding": 0, "pulling": 0}
        self.pending_local = 0
        self.failures: deque[Failure] = deque(maxlen=50)
        self.recent_thumbnails: deque[str] = deque(maxlen=10)
        self.backend = ""
        # Called with (name, reason, role, sha256 of the content when known) on every failure: the agent records
        # them in the journal.
        self.on_failure: Callable[[str, str, str, str | None], None] | None = None
        # Called with (name, role) when an item that failed went through after all: the journal forgets it.
        self.on_resolved: Callable[[str, str], None] | None = None
        # counts["failed"] is what still fails: a failure of an item that later went through (a newer version of
        # the file, a passing cause) is taken back out. failed_total never steps back (the metrics' counter).
        self.failed_total = 0
        self._unresolved: dict[tuple[str, str], int] = {}  # (name, role) -> failures counted for it
        # Per activity (upload, thumbnail, pull): bytes moved and when one last succeeded, for metrics.
        self.bytes: dict[str, int] = {}
        self.last_success: dict[str, float] = {}
        # Called with (activity, seconds, bytes) for every upload/thumbnail/pull done: the metrics' histograms.
        self.on_done: Callable[[str, float, int], None] | None = None
        # Watch folders that are gone (an unplugged drive): folder -> what to tell the user.
        self.missing_folders: dict[str, str] = {}
        # Called (outside the lock) when the backend answers again after being offline: the agent wakes every
        # role that is waiting out the outage, so work resumes at once instead of after each one's backoff.
        self.on_back: list[Callable[[], None]] = []

    @property
    def version(self) -> int:
        """Bumped by every change (each write under the status lock)."""
        return self._lock.version

    def wait_change(self, after: int, timeout: float) -> None:
        """Return once ``version`` is past ``after``, or after ``timeout`` seconds."""
        with self._lock.cond:
            self._lock.cond.wait_for(lambda: self._lock.version > after, timeout)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def fail(self, name: str, reason: str, role: str, *, once: bool = False, version: str | None = None) -> None:
        """Record a failure. ``once``: not again if ``name`` is already listed with this reason (the puller
        relays a worker's failure marker, which this same agent's worker has usually reported already).
        ``version``: the sha256 of the content that failed, when known (the journal keeps the verdict with it).

        Names and reasons are kept escaped (``printable``): a name that is not UTF-8 must not break the
        journal, the status file or the log line that follows, and a newline must not split a line.
        """
        name, reason = printable(name), printable(reason)
        with self._lock:
            if once and any(f.name == name and f.reason == reason for f in self.failures):
                return
            self.counts["failed"] += 1
            self.failed_total += 1
            self._unresolved[(name, role)] = self._unresolved.get((name, role), 0) + 1
            self.failures.append(Failure(name, reason, role, time.time()))
        if self.on_failure is not None:
            self.on_failure(name, reason, role, version)

    def remember(self, name: str, reason: str, role: str) -> None:
        """List a failure known from before (the journal), without reporting it again. It still fails, so it
        counts in ``counts["failed"]`` (the count and the list agree) until resolved; not in ``failed_total``,
        which counts failures as they happen."""
        name, reason = printable(name), printable(reason)
        with self._lock:
            if not any(f.name == name and f.role == role for f in self.failures):
                self.failures.append(Failure(name, reason, role, time.time()))
                if not self._unresolved.get((name, role)):
                    self.counts["failed"] += 1
                    self._unresolved[(name, role)] = 1

    def resolved(self, name: str, role: str) -> None:
        """``name`` went through ``role`` after all (a fixed file, a passing cause): drop that role's failures of
        it from the recent list. Per role, because names of different roles can coincide (a source key and the
        thumbnail key the puller refused). Its failures are taken out of the failed count too."""
        name = printable(name)
        with self._lock:
            counted = self._unresolved.pop((name, role), 0)
            self.counts["failed"] -= counted
            listed = any(f.name == name and f.role == role for f in self.failures)
            if listed:
                kept = [f for f in self.failures if not (f.name == name and f.role == role)]
                self.failures.clear()
                self.failures.extend(kept)
        if (counted or listed) and self.on_resolved is not None:
            self.on_resolved(name, role)

    def adopt(self, older: Status) -> None:
        """Take over the failures of the agent this one replaces (a reload): they can still be resolved here."""
        with older._lock:
            failures, unresolved, total = list(older.failures), dict(older._unresolved), older.failed_total
        with self._lock:
            self.failures.extend(failures)
            self._unresolved.update(unresolved)
            self.failed_total = total

    def folder_missing(self, folder: str, detail: str) -> None:
        with self._lock:
            self.missing_folders[folder] = detail

    def folder_back(self, folder: str) -> None:
        with self._lock:
            self.missing_folders.pop(folder, None)

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
            self.recent_thumbnails.append(printable(path))

    def offline(self, reason: str, *, quiet: bool = False) -> None:
        """The backend cannot be used now; ``quiet``: the caller says why in its own words."""
        if self.state in ("stopping", "stopped"):
            # A call cut off by the agent's own stop (the embedded server stops with it) is not an outage.
            log.debug("backend call ended by the stop: %s", reason)
            return
        with self._lock:
            went = self.offline_since is None
            if went:
                self.offline_since = time.time()
            self.offline_reason = reason
        if went and not quiet:  # once per outage: each role's own retries log at their own pace
            if self.one_shot:
                log.warning("backend unreachable: %s; what is not done when the command ends is listed as unfinished", reason)
            else:
                log.warning("backend unreachable: %s; work is kept locally and resumes when it is back", reason)

    def online(self) -> None:
        if self.offline_since is None:
            return  # the usual case (every receive, every upload): nothing changes, nothing to publish
        with self._lock:
            since, self.offline_since = self.offline_since, None
            self.offline_reason = ""
        if since is not None:
            log.info("backend reachable again after %.0f s", time.time() - since)
            for hook in list(self.on_back):
                hook()

    def set_state(self, state: str, fatal: str | None = None) -> None:
        with self._lock:
            self.state = state
            if fatal:
                self.fatal = fatal

    def set_pending(self, n: int) -> None:
        if n != self.pending_local:
            with self._lock:
                self.pending_local = n

    def snapshot(self) -> StatusSnapshot:
        with self._lock.quiet:
            return {
                "pid": os.getpid(),
                "version": self.version,
                "state": self.state,
                "roles": self.roles,
                "started_at": self.started_at,
                "updated_at": time.time(),
                "backend": self.backend,
                "offline_since": self.offline_since,
                "offline_reason": self.offline_reason,
                "fatal": self.fatal,
                "counts": dict(self.counts),
                "failed_total": self.failed_total,
                "active": dict(self.active),
                "pending_local": self.pending_local,
                "failures": [f.as_dict() for f in self.failures],
                "missing_folders": [{"folder": k, "detail": v} for k, v in self.missing_folders.items()],
                "recent_thumbnails": list(self.recent_thumbnails),
                "bytes": dict(self.bytes),
                "last_success": dict(self.last_success),
            }

    def publish(self, state_dir: Path) -> None:
        """Write the snapshot atomically for ``thumbdrop status`` (and the tray) to read."""
        atomic_write(state_dir / STATUS_FILE, json.dumps(self.snapshot(), indent=1), perms=UMASK_PERMS)


def read_published(state_dir: Path) -> StatusSnapshot | None:
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
    return cast(StatusSnapshot, data)
