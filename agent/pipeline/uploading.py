"""The uploader's uploading part: one file at a time on a bounded pool, each told to the listeners.

Owns the upload pool, what is queued or uploading (a file is never sent twice at once), the per-path backoff
of postponed files, and the decision per file: skip it (thumbnailed locally, unchanged in the bucket, refused
before with the same content) or hash and put it (``agent.pipeline.put``). ``reconcile`` (the uploader) feeds
it every local file with the bucket's listing; the settle thread feeds it the files that settled.

Locks: ``_lock`` guards ``_queued``, ``_busy``, ``_dirty``, ``_retry_at`` and ``_backoff``. It is never held
while calling out (the watcher, the status, a listener), so there is no lock order with the watcher's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.backoff import Backoff
from agent.config.model import Config
from agent.errors import ItemError, ResourceMissingError, ThumbdropError
from agent.pipeline.keys import printable
from agent.pipeline.local_files import LocalFile, LocalFiles
from agent.pipeline.pools import shutdown_within
from agent.pipeline.put import Putter
from agent.pipeline.watching import Watcher, stat_or_none
from agent.state.journal import Journal, UploadRecord
from agent.state.status import Status

log = logging.getLogger(__name__)


class UploadOutcome(StrEnum):
    """What became of one upload attempt; the values are the words logs, listeners and tests have always seen."""

    UPLOADED = "uploaded"  # sent: the bucket holds this content now
    UNCHANGED = "unchanged"  # the bucket has this content already, or the local thumbnails are newer than it
    GONE = "gone"  # not there any more, or a symlink on its path leads outside the watch folder
    FAILED = "failed"  # refused: the reason is in the status and the log
    POSTPONED = "postponed"  # the backend is unreachable (or the agent stopping): tried again later
    BUSY = "busy"  # another thread is uploading it; that upload's outcome follows
    WRITING = "writing"  # a program still writes it: the settle loop sends it once it is closed
    KNOWN_BAD = "known-bad"  # the worker refused these very bytes before: not sent again


# Told of every upload attempt's outcome: (file, outcome, what the bucket holds now when known, the reason of a
# failure). The in-process hand-over (the agent's and sync's) listens here.
UploadListener = Callable[[LocalFile, UploadOutcome, UploadRecord | None, str], None]


class Uploads:
    """Queues and runs uploads, with per-path backoff; see the module docstring."""

    def __init__(
        self, cfg: Config, files: LocalFiles, watcher: Watcher, status: Status, journal: Journal, stop: threading.Event
    ) -> None:
        self.cfg = cfg
        self.files = files
        self.layout = files.layout
        self.watcher = watcher
        self.status = status
        self.journal = journal
        self.stop = stop
        self.thumbs_dir = Path(cfg.local.thumbnails_dir)
        self.putter = Putter(cfg, journal, stop)
        self.pool = ThreadPoolExecutor(cfg.transfer.concurrency, thread_name_prefix="uploader")
        self._lock = threading.Lock()
        self._queued: set[Path] = set()  # submitted to the pool, not started: a rescan must not queue them again
        self._busy: set[Path] = set()  # uploading now
        self._dirty: set[Path] = set()  # submitted again while uploading: looked at again once done
        self._retry_at: dict[Path, float] = {}  # postponed files -> when (monotonic) to try again
        self._backoff: dict[Path, Backoff] = {}
        # A bucket that is gone (the backend came back empty): the agent sets up again or says what to run.
        self.on_missing: Callable[[ThumbdropError], None] | None = None
        self._listeners: list[UploadListener] = []
        # Told just before a file's bytes are sent (its event may arrive before the upload returns).
        self._sending: list[Callable[[LocalFile], None]] = []

    @property
    def s3(self) -> Any:
        return self.putter.s3

    @s3.setter
    def s3(self, client: Any) -> None:
        self.putter.s3 = client

    def add_listener(self, listener: UploadListener) -> None:
        self._listeners.append(listener)

    def add_sending_listener(self, listener: Callable[[LocalFile], None]) -> None:
        """``listener(lf)`` runs before ``lf`` is sent; the upload listeners then hear how it ended, always."""
        self._sending.append(listener)

    def remove_listener(self, listener: UploadListener) -> None:
        """Stop telling ``listener``; nothing happens when it is not listening."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def listing(self) -> dict[str, tuple[int, str]]:
        """key -> (size, etag) for everything under source.prefix: one paginated listing."""
        from agent.cloud.errors import translate

        out: dict[str, tuple[int, str]] = {}
        paginator = self.s3.get_paginator("list_objects_v2")
        with translate("list the source bucket"):
            for page in paginator.paginate(Bucket=self.cfg.source.bucket, Prefix=self.cfg.source.prefix):
                for obj in page.get("Contents", []):
                    out[obj["Key"]] = (obj["Size"], str(obj["ETag"]).strip('"'))
        return out

    # --- the queue -------------------------------------------------------------------------

    def submit(self, lf: LocalFile, remote: tuple[int, str] | None) -> Future[UploadOutcome] | None:
        """Queue an upload unless this file is already queued or uploading (a rescan during a backlog); None then,
        or when stopping. ``remote``: (size, ETag) the bucket holds for it, when known.

        A file uploading now is looked at again once it is done (the journal then says whether it changed, so an
        unchanged one costs no second upload).
        """
        with self._lock:
            if lf.path in self._busy:
                self._dirty.add(lf.path)
                return None
            if lf.path in self._queued:
                return None
            self._queued.add(lf.path)
        try:
            return self.pool.submit(self._upload_guarded, lf, remote)
        except RuntimeError:  # the pool is shut down: stopping
            with self._lock:
                self._queued.discard(lf.path)
            return None

    def _upload_guarded(self, lf: LocalFile, remote: tuple[int, str] | None) -> UploadOutcome:
        """upload() that turns errors into status entries and tells the listeners."""
        with self._lock:
            self._queued.discard(lf.path)
            if lf.path in self._busy:
                self._dirty.add(lf.path)
                return UploadOutcome.BUSY
            self._busy.add(lf.path)
        rec: UploadRecord | None = None
        result, reason = UploadOutcome.FAILED, ""
        try:
            result, rec = self._upload(lf, remote)
            with self._lock:
                self._retry_at.pop(lf.path, None)
                self._backoff.pop(lf.path, None)
            self.retry_now()  # one success says the backend is back: the others need not sit out their delays
            self.status.online()
            return result
        except ItemError as exc:
            reason = str(exc)
            # once: the same file refused for the same reason again (its event and a rescan, a close after a
            # write) is one failure, not two.
            self.status.fail(str(lf.path), reason, "uploader", once=True)
            log.error("failed %s: %s", printable(str(lf.path)), exc)
            return UploadOutcome.FAILED
        except ThumbdropError as exc:
            reason = str(exc)
            missing = isinstance(exc, ResourceMissingError) and self.on_missing is not None
            if exc.kind == "transient" or missing:
                if missing:
                    assert self.on_missing is not None
                    self.on_missing(exc)  # said once by the agent, not once per file
                else:
                    self.status.offline(str(exc))
                # Kept locally and tried again with a growing delay; nothing is lost while offline.
                with self._lock:
                    backoff = self._backoff.setdefault(lf.path, Backoff(first=5.0, cap=60.0, jitter=0.25))
                    delay = backoff.next()
                    self._retry_at[lf.path] = time.monotonic() + delay
                (log.debug if missing else log.warning)(
                    "upload of %s postponed (retry in about %.0f s): %s", printable(str(lf.path)), delay, exc
                )
                result = UploadOutcome.POSTPONED
                return result
            self.status.fail(str(lf.path), str(exc), "uploader")
            log.error("failed %s: %s", printable(str(lf.path)), exc)
            return UploadOutcome.FAILED
        finally:
            with self._lock:
                self._busy.discard(lf.path)
                again = lf.path in self._dirty
                self._dirty.discard(lf.path)
            if again:
                self.watcher.touch(lf.path)
            for listener in list(self._listeners):
                try:
                    listener(lf, result, rec, reason)
                except Exception:  # noqa: BLE001 - a listener's bug must not cost the upload pool a thread
                    log.exception("uploader: a listener failed on %s", printable(str(lf.path)))

    def retry_now(self) -> None:
        """The backend answers again: every postponed file is due now, and its backoff starts from the first step."""
        with self._lock:
            if not self._retry_at and not self._backoff:
                return
            now = time.monotonic()
            for path in self._retry_at:
                self._retry_at[path] = now
            self._backoff.clear()

    def due_retries(self, now: float) -> list[Path]:
        """The postponed files due at ``now`` (monotonic), taken off the retry table."""
        with self._lock:
            due = [p for p, t in self._retry_at.items() if t <= now]
            for p in due:
                del self._retry_at[p]
        return due

    def retry_deadlines(self) -> list[float]:
        with self._lock:
            return list(self._retry_at.values())

    def in_hand(self) -> int:
        """Files queued, uploading or waiting to retry."""
        with self._lock:
            return len(self._queued) + len(self._busy) + len(self._retry_at)

    def busy_keys(self) -> set[str]:
        """The keys being uploaded now."""
        with self._lock:
            busy = list(self._busy)
        keys = set()
        for path in busy:
            lf = self.files.local_file(path)
            if lf is not None:
                keys.add(self.layout.source_key(lf.rel))
        return keys

    def close(self, *, wait: bool) -> None:
        """No more uploads: queued ones are cancelled; with ``wait``, running ones finish first."""
        self.pool.shutdown(wait=wait, cancel_futures=True)

    def close_within(self, deadline: float) -> bool:
        """close(), waiting for running uploads until ``deadline`` (monotonic); True when all finished."""
        return shutdown_within(self.pool, deadline, cancel_futures=True)

    # --- one file ----------------------------------------------------------------------

    def upload(self, lf: LocalFile, remote: tuple[int, str] | None = None) -> UploadOutcome:
        """Upload one file unless the bucket has this content; UPLOADED, UNCHANGED or GONE (and the rare others)."""
        return self._upload(lf, remote)[0]

    def _upload(self, lf: LocalFile, remote: tuple[int, str] | None) -> tuple[UploadOutcome, UploadRecord | None]:
        """upload(), also returning what the bucket now holds (when known) for the hand-over to the worker."""
        path = lf.path
        problem = self.layout.name_problem(lf.rel)
        if problem:
            raise ItemError(f"not uploaded: {problem}")
        if not self.files.inside(path, lf.folder):
            log.info("skipped %s: a symlink on its path leads outside the watch folder", path)
            return UploadOutcome.GONE, None
        try:
            st = self._settled_stat(path)
        except FileNotFoundError:
            return UploadOutcome.GONE, None
        except OSError as exc:
            raise ItemError(f"cannot read {path}: {exc.strerror}") from None
        if st is None:
            return UploadOutcome.POSTPONED, None  # stopping while it was still being written: the next start takes it
        if self.watcher.still_open(path):
            self.watcher.touch(path)  # a program still writes it: the settle loop sends it once it is closed
            return UploadOutcome.WRITING, None
        if not path.is_file():
            return UploadOutcome.GONE, None
        if self.thumbnailed_locally(lf.rel, st):
            return UploadOutcome.UNCHANGED, None
        key = self.layout.source_key(lf.rel)
        cached = self.journal.upload(str(path))
        if remote is not None and cached and (cached.size, cached.mtime_ns) == (st.st_size, st.st_mtime_ns):
            if cached.key == key and remote == (cached.size, cached.etag):
                return UploadOutcome.UNCHANGED, cached
        if cached and cached.key == key and (cached.size, cached.mtime_ns) == (st.st_size, st.st_mtime_ns):
            # The worker refused these very bytes before (the embedded backend forgets its buckets and markers
            # at every restart): the same content gets the same verdict. A changed file is tried again.
            reason = self.journal.known_bad(printable(key), cached.sha256)
            if reason is not None:
                self.status.remember(key, reason, "worker")
                log.debug("not uploaded again: %s failed before with the same content (%s)", printable(str(path)), reason)
                return UploadOutcome.KNOWN_BAD, None
        try:
            hashes = self.putter.hash(path, st.st_size, etag=remote is not None)
        except FileNotFoundError:
            return UploadOutcome.GONE, None
        except OSError as exc:
            raise ItemError(f"cannot read {path}: {exc.strerror or exc}") from None
        if remote is not None and hashes.etag is not None and remote == (st.st_size, hashes.etag):
            rec = UploadRecord(
                str(path), key, st.st_size, st.st_mtime_ns, hashes.sha256, hashes.etag, self.watcher.folder_id(lf.folder)
            )
            self.journal.record_upload(rec)
            return UploadOutcome.UNCHANGED, rec
        for sending in list(self._sending):
            sending(lf)
        self.status.begin("uploading")
        started = time.monotonic()
        try:
            etag = self.putter.put(path, key, st, hashes)
        finally:
            self.status.end("uploading")
        self.status.done("upload", time.monotonic() - started, st.st_size)
        after = stat_or_none(path)
        if after is None or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            log.info("%s changed during its upload; it goes up again once it settles", path)
            self.watcher.touch(path)
        rec = UploadRecord(str(path), key, st.st_size, st.st_mtime_ns, hashes.sha256, etag, self.watcher.folder_id(lf.folder))
        self.journal.record_upload(rec)
        self.status.count("uploaded")
        self.status.resolved(str(path), "uploader")
        log.info("uploaded %s -> s3://%s/%s (%d bytes)", printable(str(path)), self.cfg.source.bucket, printable(key), st.st_size)
        return UploadOutcome.UPLOADED, rec

    def _settled_stat(self, path: Path) -> os.stat_result | None:
        """stat() once the file has not changed for settle_seconds (waits if it changed recently).

        The watcher only hands over settled files; this guards reconcile and sync, which find
        files by listing and could otherwise upload one that is still being written.
        """
        settle = self.cfg.watch.settle_seconds
        st = path.stat()
        still_since = time.monotonic()
        # Quiet by its timestamps, or (for a clock-skewed mount) unchanged for settle_seconds by ours.
        while time.time() - max(st.st_mtime, st.st_ctime) < settle and time.monotonic() - still_since < settle:
            if self.stop.wait(0.1):
                return None
            again = path.stat()
            if (again.st_size, again.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                still_since = time.monotonic()
            st = again
        return st

    def remote_of(self, lf: LocalFile) -> tuple[int, str] | None:
        """What the journal says the bucket holds for this file (saves a request)."""
        try:
            rec = self.journal.upload(str(lf.path))
        except UnicodeEncodeError:
            return None  # a name that is not UTF-8: upload() refuses and reports it
        return (rec.size, rec.etag) if rec and rec.key == self.layout.source_key(lf.rel) else None

    def up_to_date_locally(self, lf: LocalFile) -> bool:
        """Every thumbnail of this file is in the local folder and newer than it: nothing to do, no request."""
        st = stat_or_none(lf.path)
        return st is not None and self.thumbnailed_locally(lf.rel, st)

    def thumbnailed_locally(self, rel: str, st: os.stat_result) -> bool:
        """The local thumbnails folder is the truth: thumbnails newer than the file mean it is done.

        ctime, not only mtime: a file copied in with its old mtime kept (cp -p) still counts as new.
        This keeps a restart on the (empty) embedded backend, or after originals were pruned from the
        bucket, from uploading and thumbnailing everything again.
        """
        changed = max(st.st_mtime, st.st_ctime)
        for size in self.layout.sizes:
            thumb = stat_or_none(self.thumbs_dir / self.layout.thumb_rel(rel, size))
            if thumb is None or thumb.st_mtime < changed:
                return False
        return True
