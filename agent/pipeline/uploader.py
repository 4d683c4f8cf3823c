"""The uploader role: watch folders -> source bucket.

Three parts, each guarding its own state:
- ``local_files.LocalFiles``: which files are ours (the folders, include/exclude) and each one's key; no state.
- ``watching.Watcher``: the observers, the settle table, close-write tracking, watch-folder identity.
- ``uploading.Uploads``: the upload pool, what is queued or uploading, per-path backoff, the put decision;
  ``put.Putter`` hashes a file and sends it (one request, or resumable parts: ``multipart``).

This module composes them and runs the role: the settle thread (``uploader-settle``) hands the watcher's
settled files, and the postponed ones once due, to the uploads, unless the role is paused, in
``watch.pause_hours``, or its bucket notifications do not exist yet. ``reconcile`` compares each folder with
one listing of the bucket (never a HEAD per file) and uploads what is missing or different; it runs at start
and on every rescan, so files that arrived while the agent was stopped, or whose events were missed, still go
up. Its own lock guards ``_held_by`` and ``_unsent``; it is never held while calling into a part.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from agent.config.model import Config
from agent.errors import ThumbdropError
from agent.pipeline.bandwidth import PauseSchedule
from agent.pipeline.local_files import LocalFile, LocalFiles, NameFilter
from agent.pipeline.multipart import abort_stale
from agent.pipeline.role import RoleThreads
from agent.pipeline.uploading import UploadListener, UploadOutcome, Uploads
from agent.pipeline.watching import Watcher, stat_or_none
from agent.state.journal import Journal
from agent.state.status import Status

if TYPE_CHECKING:  # boto3 loads when the uploader talks to the bucket: not for a no-op sync
    from collections.abc import Callable

    from agent.cloud.clients import Backend

__all__ = ["LocalFile", "NameFilter", "UploadListener", "UploadOutcome", "Uploader"]  # the names other modules import

log = logging.getLogger(__name__)
# How often the settle loop checks that each watch folder is still the one its inotify watch is on.
ROOT_CHECK_SECONDS = 2.0
# While paused, in pause hours or before the notifications exist: how often to look again (resume wakes it at once).
HELD_CHECK_SECONDS = 5.0


class Uploader(RoleThreads):
    """The uploader role (see the module docstring): the parts, the settle thread, pause hours."""

    def __init__(self, cfg: Config, backend: Backend | None, status: Status, journal: Journal) -> None:
        """``backend`` None: only the local side (scan, local checks) until attach(); sync's no-op needs no more."""
        super().__init__("uploader")
        self.cfg = cfg
        self.status = status
        self.journal = journal
        self.files = LocalFiles(cfg)
        self.layout = self.files.layout
        self.watcher = Watcher(cfg, self.files, status, journal)
        self.uploads = Uploads(cfg, self.files, self.watcher, status, journal, self.stop_event)
        if backend is not None:
            self.attach(backend)
        # Cleared by the agent until its bucket notifications exist: an object uploaded before
        # then would never produce the event that gets it thumbnailed.
        self.provisioned = threading.Event()
        self.provisioned.set()
        # watch.pause_hours: set by the agent only; 'sync' is an explicit request and ignores the schedule.
        self.schedule: PauseSchedule | None = None
        self._lock = threading.Lock()
        self._held_by: str | None = None  # the pause window in force at the last look (logged when it changes)
        self._unsent = 0  # found by count_unsent() while paused; the next reconcile takes them
        # What the agent, the control socket, sync and the tests call, served by the part that owns it.
        self.local_file = self.files.local_file
        self.scan = self.files.scan
        self.touch = self.watcher.touch
        self.upload = self.uploads.upload
        self.submit = self.uploads.submit
        self.up_to_date_locally = self.uploads.up_to_date_locally
        self.retry_now = self.uploads.retry_now
        self.add_listener = self.uploads.add_listener
        self.add_sending_listener = self.uploads.add_sending_listener
        self.remove_listener = self.uploads.remove_listener

    def attach(self, backend: Backend) -> None:
        self.uploads.s3 = backend.s3

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The upload pool (tests and benchmarks shut it down; the role's own end is stop/join or close)."""
        return self.uploads.pool

    @property
    def on_missing(self) -> Callable[[ThumbdropError], None] | None:
        """Told when the bucket is gone (the backend came back empty): the agent sets up again."""
        return self.uploads.on_missing

    @on_missing.setter
    def on_missing(self, callback: Callable[[ThumbdropError], None] | None) -> None:
        self.uploads.on_missing = callback

    # --- reconcile -----------------------------------------------------------------------

    def abort_stale_multipart(self, *, older_than: float = 3600.0, ours_too: bool = True) -> int:
        """Abort multipart uploads a crash left behind: ours (keys of our files) or older than an hour.

        Uploads the journal remembers are kept while their file is there: the reconcile that follows resumes them.
        """
        ours = {self.layout.source_key(lf.rel) for lf in self.scan()} if ours_too else set()
        source = self.cfg.source
        return abort_stale(
            self.uploads.s3,
            self.journal,
            source.bucket,
            source.prefix,
            ours=ours,
            busy=self.uploads.busy_keys,
            older_than=older_than,
        )

    def count_unsent(self) -> int:
        """Local files a paused agent has not reconciled yet (changed since the journal's record and not
        thumbnailed locally): shown as pending while paused, uploaded by the reconcile that 'resume' runs."""
        count = 0
        for lf in self.scan():
            st = stat_or_none(lf.path)
            if st is None or self.uploads.thumbnailed_locally(lf.rel, st):
                continue
            rec = self.journal.upload(str(lf.path))
            if rec is None or (rec.size, rec.mtime_ns) != (st.st_size, st.st_mtime_ns):
                count += 1
        with self._lock:
            self._unsent = count
        self._publish_pending()
        return count

    def reconcile(self) -> list[Future[UploadOutcome]]:
        """Upload what is missing or different in the bucket; returns the futures of the uploads."""
        with self._lock:
            self._unsent = 0  # this round takes them all
        remote = self.uploads.listing()
        futures = []
        seen = 0
        held = self.held()
        for lf in self.scan():
            seen += 1
            if held:
                self.touch(lf.path)  # pause hours: the settle loop sends it when the window ends
                continue
            fut = self.submit(lf, remote.get(self.layout.source_key(lf.rel)))
            if fut is not None:
                futures.append(fut)
        log.info("reconciled %d local file(s) against %d object(s) in %s", seen, len(remote), self.cfg.source.bucket)
        return futures

    def held(self) -> bool:
        """Inside a ``watch.pause_hours`` window (logged when one starts and ends)."""
        window = self.schedule.active() if self.schedule is not None else None
        with self._lock:
            before, self._held_by = self._held_by, window
        if window != before:
            if window:
                log.info("pause hours %s: uploads wait until the window ends", window)
            else:
                log.info("pause hours %s over: uploads resume", before)
        return window is not None

    def _publish_pending(self) -> None:
        """Files noticed but not uploaded yet: settling, queued, uploading, or waiting to retry."""
        with self._lock:
            unsent = self._unsent
        self.status.set_pending(self.watcher.pending_count() + self.uploads.in_hand() + unsent)

    # --- the Role lifecycle (agent.pipeline.role) ---

    def start(self) -> None:
        """Watch the folders and start the settle thread."""
        self.watcher.start()
        self.spawn(self._settle_loop, "settle")

    start_watching = start  # the name the agent calls

    def wake(self) -> None:
        """Look at the pending files now (after a resume, or once the notifications exist)."""
        self.watcher.wakeup.set()

    def stop(self) -> None:
        super().stop()
        self.watcher.stop()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        observers_done = self.watcher.join(deadline)
        threads_done = super().join(max(0.1, deadline - time.monotonic()))
        if not self.uploads.close_within(deadline):
            log.warning("uploads still waiting on the backend at the stop deadline: left for the next start")
            return False
        return observers_done and threads_done

    def close(self, *, wait: bool) -> None:
        """End the uploads of an uploader that was never started (sync's own): queued ones are cancelled; with
        ``wait``, the running ones finish first. Call stop() first for settling ones to give up."""
        self.uploads.close(wait=wait)

    # --- the settle thread ---

    def _settle_loop(self) -> None:
        next_root_check = time.monotonic() + ROOT_CHECK_SECONDS
        timeout = 0.0
        wakeup = self.watcher.wakeup
        while True:
            wakeup.wait(timeout)
            if self.stop_event.is_set():
                return
            wakeup.clear()
            try:
                now = time.monotonic()
                if now >= next_root_check:
                    next_root_check = now + ROOT_CHECK_SECONDS
                    self.watcher.check_roots()
                timeout = min(self._settle_tick(), next_root_check) - time.monotonic()
                timeout = max(0.01, timeout)  # at least a moment: a burst of events is handled in one round
            except Exception:  # noqa: BLE001 - this thread feeds every live upload: log the bug, never die of it
                log.exception("uploader: unexpected error while handing over settled files (continuing)")
                timeout = 1.0

    def _settle_tick(self) -> float:
        """Hand over the settled files; returns when (monotonic) the next one may be due."""
        if self.paused.is_set() or not self.provisioned.is_set() or self.held():
            self._publish_pending()
            return time.monotonic() + HELD_CHECK_SECONDS
        ready, now = self.watcher.settle(self.uploads.due_retries)
        for path in ready:
            lf = self.local_file(path)
            if lf is not None:
                self.submit(lf, self.uploads.remote_of(lf))
        self._publish_pending()
        due = self.watcher.settle_deadlines() + self.uploads.retry_deadlines()
        # A file seen for the first time is stat'ed again after a short while even when "due" already: its
        # size and mtime must hold still between two looks.
        return max(min(due), now + 0.05) if due else float("inf")
