"""The uploader role: watch folders -> source bucket.

The watchdog handler only filters and hands paths to the settler; the settler
thread uploads a file once its size and mtime have been still for
``watch.settle_seconds`` and, where the platform tells (inotify on Linux), once
the program writing it has closed it; uploads run on a bounded pool with one
shared client.

What each platform can know about a file still being written:
- Linux, inotify (the default observer there): every write gives IN_MODIFY and
  the writer's close gives IN_CLOSE_WRITE, which watchdog reports as ``closed``.
  A file written to since its last close-write is still open: it waits, however
  long its writer pauses between chunks (up to OPEN_WAIT_CAP since its last
  write, for a writer that never closes or a missed event). A writer that
  closes and reopens (scp/SMB/FTP resuming, appending in chunks) is covered by
  the settle time after each close only.
- macOS (FSEvents), Windows (ReadDirectoryChangesW), BSD (kqueue) and the
  polling observer report no close: only the settle time applies.
- Network file systems (NFS, SMB/CIFS mounts): inotify sees only writes made
  through this host; a writer on another host produces no events at all, so such
  files are found by the rescan and uploaded once their timestamps have been
  quiet for the settle time.
- /proc/*/fd is not used: reading it costs a walk of every process, shows other
  users' processes only to root, and sees nothing of other hosts or containers.
``reconcile`` compares each folder with one listing of the bucket (never a HEAD
per file) and uploads what is missing or different; it runs at start and on
every rescan, so files that arrived while the agent was stopped, or whose
events were missed, still go up.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.backoff import Backoff
from agent.config.cleanup_checks import move_target
from agent.config.model import Config
from agent.errors import ItemError, ResourceMissingError, ThumbdropError, UnsupportedError
from agent.pipeline.bandwidth import PauseSchedule, limiter_for, throttle
from agent.pipeline.keys import Layout, ascii_meta, printable
from agent.pipeline.multipart import ResumableUpload, source_of
from agent.pipeline.pools import shutdown_within
from agent.state.journal import Journal, UploadRecord
from agent.state.status import Status
from agent.state.watch_folders import MISSING, NEW, WatchFolder, check_folder, identify, read_marker

if TYPE_CHECKING:  # boto3 and watchdog load when the uploader talks to the bucket or watches: not for a no-op sync
    from watchdog.events import FileSystemEvent

    from agent.cloud.clients import Backend

log = logging.getLogger(__name__)
MIB = 1 << 20
# How often the settle loop checks that each watch folder is still the one its inotify watch is on.
ROOT_CHECK_SECONDS = 2.0
# The longest a file written to but not closed again waits after its last write: a writer that keeps a file open
# without writing (or a close event lost to an inotify queue overflow) must not hold it back for ever.
OPEN_WAIT_CAP = 300.0
# While paused, in pause hours or before the notifications exist: how often to look again (resume wakes it at once).
HELD_CHECK_SECONDS = 5.0


class NameFilter:
    """include/exclude globs, case-insensitive; exclude also applies to every folder on the path."""

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self.include = [p.lower() for p in include]
        self.exclude = [p.lower() for p in exclude]

    def excluded(self, name: str) -> bool:
        low = name.lower()
        return any(fnmatch.fnmatchcase(low, p) for p in self.exclude)

    def wanted(self, rel: str) -> bool:
        parts = rel.split("/")
        if any(self.excluded(p) for p in parts):
            return False
        low = parts[-1].lower()
        return any(fnmatch.fnmatchcase(low, p) for p in self.include)


@dataclass(frozen=True)
class LocalFile:
    folder: int
    path: Path
    rel: str  # relative to the source prefix (folder name first when there are several)


# Told of every upload attempt's outcome: (file, 'uploaded'|'unchanged'|'gone'|'failed'|'postponed'|'busy', what
# the bucket holds now when known, the reason of a failure). The in-process hand-over (sync) listens here.
UploadListener = Callable[[LocalFile, str, UploadRecord | None, str], None]


@dataclass
class Hashes:
    sha256: str
    etag: str | None  # the S3 ETag this content would get; only worked out when there is a remote copy to compare
    data: bytes | None  # the content of a small file, read once for hashing and upload


class Uploader:
    def __init__(self, cfg: Config, backend: Backend | None, status: Status, journal: Journal) -> None:
        """``backend`` None: only the local side (scan, local checks) until attach(); sync's no-op needs no more."""
        self.cfg = cfg
        self.s3: Any = backend.s3 if backend is not None else None
        self.status = status
        self.journal = journal
        self.layout = Layout.of(cfg)
        self.folders = [Path(f) for f in cfg.watch.folders]
        self.thumbs_dir = Path(cfg.local.thumbnails_dir)
        self.roots = [f.resolve() for f in self.folders]
        self.filter = NameFilter(cfg.watch.include, cfg.watch.exclude)
        self.threshold = cfg.transfer.multipart_threshold_mb * MIB
        self.chunk = cfg.transfer.multipart_chunksize_mb * MIB
        self.device = cfg.local.device_name or socket.gethostname()
        self.pool = ThreadPoolExecutor(cfg.transfer.concurrency, thread_name_prefix="uploader")
        self.stop_event = threading.Event()
        self.paused = threading.Event()
        # Cleared by the agent until its bucket notifications exist: an object uploaded before
        # then would never produce the event that gets it thumbnailed.
        self.provisioned = threading.Event()
        self.provisioned.set()
        self.limiter = limiter_for(cfg.backend.max_bandwidth)
        # watch.pause_hours: set by the agent only; 'sync' is an explicit request and ignores the schedule.
        self.schedule: PauseSchedule | None = None
        self._held_by: str | None = None
        self._lock = threading.Lock()
        # path -> (size, mtime_ns, still since); size -1 = not yet looked at, "since" = the event's time
        self._pending: dict[Path, tuple[int, int, float]] = {}
        self._busy: set[Path] = set()
        self._queued: set[Path] = set()
        self._handler: Any = None  # a watchdog handler (see _handler_class)
        self._watches: list[Any] = []  # the observer watch of each folder, to replace when the folder is
        self._roots_seen: list[
            tuple[int, int] | None
        ] = []  # (st_dev, st_ino) of each folder when watched  # submitted to the pool, not started: a rescan must not queue them again
        self._dirty: set[Path] = set()
        self._retry_at: dict[Path, float] = {}
        self._backoff: dict[Path, Backoff] = {}
        # A bucket that is gone (the backend came back empty): the agent sets up again or says what to run.
        self.on_missing: Callable[[ThumbdropError], None] | None = None
        self._dirs_to_scan: set[Path] = set()
        self._unsent = 0  # found by count_unsent() while paused; the next reconcile takes them
        # folder index -> ((st_dev, st_ino) when worked out, its identity): see _folder_id
        self._folder_ids: dict[int, tuple[tuple[int, int] | None, str | None]] = {}
        self._id_lock = threading.Lock()
        # path -> when it was last written to, for files not closed since (only where close events exist).
        self._open_for_write: dict[Path, float] = {}
        self.close_events = False  # set by start_watching when the observer reports close-write (inotify)
        self.open_wait_cap = OPEN_WAIT_CAP
        self._observers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self.listeners: list[UploadListener] = []
        # Wakes the settle loop: a file event, a folder to scan, a resume. Otherwise it sleeps until the next
        # deadline (a file due to settle, a retry, the folder check): an idle agent does not tick.
        self._wake = threading.Event()

    def attach(self, backend: Backend) -> None:
        self.s3 = backend.s3

    @functools.cached_property
    def transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig  # only multipart uploads need it: keeps start-up lean

        return TransferConfig(
            multipart_threshold=self.threshold, multipart_chunksize=self.chunk, max_concurrency=4, use_threads=True
        )

    # --- mapping ----------------------------------------------------------------------

    def local_file(self, path: Path) -> LocalFile | None:
        """The LocalFile for a path inside a watch folder, or None when it is not ours to upload."""
        for i, root in enumerate(self.folders):
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                continue
            if rel in ("", ".") or not self.filter.wanted(rel):
                return None
            return LocalFile(i, path, self.layout.source_rel(i, rel))
        return None

    def _inside(self, path: Path, folder: int) -> bool:
        """Symlinks are followed only when they point inside their watch folder."""
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            return False
        root = self.roots[folder]
        return real == root or root in real.parents

    def scan(self) -> Iterator[LocalFile]:
        for root in self.folders:
            if not root.is_dir():
                # Named once, with what to do, by the command that started (service.runtime.report_missing_watch_folders).
                log.debug("watch folder %s does not exist (yet); nothing to upload from it", root)
                continue
            for dirpath, dirs, files in os.walk(root, onerror=lambda e: log.warning("cannot read %s", e)):
                dirs[:] = [d for d in dirs if not self.filter.excluded(d)]
                for name in files:
                    lf = self.local_file(Path(dirpath) / name)
                    if lf is not None:
                        yield lf

    # --- reconcile -----------------------------------------------------------------------

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

    def abort_stale_multipart(self, *, older_than: float = 3600.0, ours_too: bool = True) -> int:
        """Abort multipart uploads a crash left behind: ours (keys of our files) or older than an hour.

        A killed upload leaves parts that cost storage and never complete. Uploads the journal
        remembers are kept while their file is there: the reconcile that follows resumes them.
        """
        resumable = set()
        for rec in self.journal.multiparts():
            if Path(rec.path).is_file():
                resumable.add(rec.upload_id)
            else:
                self.journal.forget_multipart(rec.path)  # its file is gone: aborted below like any other
        from agent.cloud.capabilities import degrade
        from agent.cloud.errors import call, translate

        ours = {self.layout.source_key(lf.rel) for lf in self.scan()} if ours_too else set()
        now = time.time()
        aborted = 0
        paginator = self.s3.get_paginator("list_multipart_uploads")
        try:
            with translate("list unfinished multipart uploads"):
                pages = list(paginator.paginate(Bucket=self.cfg.source.bucket, Prefix=self.cfg.source.prefix))
        except UnsupportedError:
            degrade(
                "multipart listing (ListMultipartUploads)",
                "parts of interrupted uploads are not found, so not aborted (the files themselves are uploaded again)",
            )
            return 0
        busy = {self.layout.source_key(self.local_file(p).rel) for p in self._busy if self.local_file(p)}  # type: ignore[union-attr]
        for page in pages:
            for up in page.get("Uploads", []):
                key, initiated = up["Key"], up["Initiated"].timestamp()
                if up["UploadId"] in resumable or key in busy or (key not in ours and now - initiated < older_than):
                    continue
                try:
                    call(
                        "abort a stale multipart upload",
                        self.s3.abort_multipart_upload,
                        Bucket=self.cfg.source.bucket,
                        Key=key,
                        UploadId=up["UploadId"],
                    )
                except UnsupportedError:
                    degrade("multipart abort (AbortMultipartUpload)", "parts of interrupted uploads stay in the store")
                    return aborted
                aborted += 1
        if aborted:
            log.info("aborted %d unfinished multipart upload(s) left by an earlier run", aborted)
        return aborted

    def count_unsent(self) -> int:
        """Local files a paused agent has not reconciled yet (changed since the journal's record and not
        thumbnailed locally): shown as pending while paused, uploaded by the reconcile that 'resume' runs."""
        count = 0
        for lf in self.scan():
            st = _stat(lf.path)
            if st is None or self._thumbnailed_locally(lf.rel, st):
                continue
            rec = self.journal.upload(str(lf.path))
            if rec is None or (rec.size, rec.mtime_ns) != (st.st_size, st.st_mtime_ns):
                count += 1
        with self._lock:
            self._unsent = count
        self._publish_pending()
        return count

    def reconcile(self) -> list[Future[str]]:
        """Upload what is missing or different in the bucket; returns the futures of the uploads."""
        with self._lock:
            self._unsent = 0  # this round takes them all
        remote = self.listing()
        futures = []
        seen = 0
        held = self.held()
        for lf in self.scan():
            seen += 1
            if held:
                self.touch(lf.path)  # pause hours: the settle loop sends it when the window ends
                continue
            fut = self._submit(lf, remote.get(self.layout.source_key(lf.rel)))
            if fut is not None:
                futures.append(fut)
        log.info("reconciled %d local file(s) against %d object(s) in %s", seen, len(remote), self.cfg.source.bucket)
        return futures

    # --- one file ----------------------------------------------------------------------

    def _submit(self, lf: LocalFile, remote: tuple[int, str] | None) -> Future[str] | None:
        """Queue an upload unless this file is already queued or uploading (a rescan during a backlog).

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

    def _upload_guarded(self, lf: LocalFile, remote: tuple[int, str] | None) -> str:
        """upload() that turns errors into status entries; returns the outcome word."""
        with self._lock:
            self._queued.discard(lf.path)
            if lf.path in self._busy:
                self._dirty.add(lf.path)
                return "busy"
            self._busy.add(lf.path)
        rec: UploadRecord | None = None
        result, reason = "failed", ""
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
            return "failed"
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
                result = "postponed"
                return result
            self.status.fail(str(lf.path), str(exc), "uploader")
            log.error("failed %s: %s", printable(str(lf.path)), exc)
            return "failed"
        finally:
            with self._lock:
                self._busy.discard(lf.path)
                again = lf.path in self._dirty
                self._dirty.discard(lf.path)
            if again:
                self.touch(lf.path)
            for listener in list(self.listeners):
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

    def upload(self, lf: LocalFile, remote: tuple[int, str] | None = None, *, known_remote: bool = True) -> str:
        """Upload one file unless the bucket has this content; 'uploaded', 'unchanged' or 'gone'."""
        return self._upload(lf, remote)[0]

    def _upload(self, lf: LocalFile, remote: tuple[int, str] | None) -> tuple[str, UploadRecord | None]:
        """upload(), also returning what the bucket now holds (when known) for the hand-over to the worker."""
        path = lf.path
        problem = self.layout.name_problem(lf.rel)
        if problem:
            raise ItemError(f"not uploaded: {problem}")
        if not self._inside(path, lf.folder):
            log.info("skipped %s: a symlink on its path leads outside the watch folder", path)
            return "gone", None
        try:
            st = self._settled_stat(path)
        except FileNotFoundError:
            return "gone", None
        except OSError as exc:
            raise ItemError(f"cannot read {path}: {exc.strerror}") from None
        if st is None:
            return "postponed", None  # stopping while it was still being written: the next start takes it
        if self.still_open(path):
            self.touch(path)  # a program still writes it: the settle loop sends it once it is closed
            return "writing", None
        if not path.is_file():
            return "gone", None
        if self._thumbnailed_locally(lf.rel, st):
            return "unchanged", None
        key = self.layout.source_key(lf.rel)
        cached = self.journal.upload(str(path))
        if remote is not None and cached and (cached.size, cached.mtime_ns) == (st.st_size, st.st_mtime_ns):
            if cached.key == key and remote == (cached.size, cached.etag):
                return "unchanged", cached
        if cached and cached.key == key and (cached.size, cached.mtime_ns) == (st.st_size, st.st_mtime_ns):
            # The worker refused these very bytes before (the embedded backend forgets its buckets and markers
            # at every restart): the same content gets the same verdict. A changed file is tried again.
            reason = self.journal.known_bad(printable(key), cached.sha256)
            if reason is not None:
                self.status.remember(key, reason, "worker")
                log.debug("not uploaded again: %s failed before with the same content (%s)", printable(str(path)), reason)
                return "known-bad", None
        try:
            hashes = self._hash(path, st.st_size, etag=remote is not None)
        except FileNotFoundError:
            return "gone", None
        except OSError as exc:
            raise ItemError(f"cannot read {path}: {exc.strerror or exc}") from None
        if remote is not None and hashes.etag is not None and remote == (st.st_size, hashes.etag):
            rec = UploadRecord(str(path), key, st.st_size, st.st_mtime_ns, hashes.sha256, hashes.etag, self._folder_id(lf.folder))
            self.journal.record_upload(rec)
            return "unchanged", rec
        self.status.begin("uploading")
        started = time.monotonic()
        try:
            etag = self._put(path, key, st, hashes)
        finally:
            self.status.end("uploading")
        self.status.done("upload", time.monotonic() - started, st.st_size)
        after = _stat(path)
        if after is None or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            log.info("%s changed during its upload; it goes up again once it settles", path)
            self.touch(path)
        rec = UploadRecord(str(path), key, st.st_size, st.st_mtime_ns, hashes.sha256, etag, self._folder_id(lf.folder))
        self.journal.record_upload(rec)
        self.status.count("uploaded")
        self.status.resolved(str(path), "uploader")
        log.info("uploaded %s -> s3://%s/%s (%d bytes)", printable(str(path)), self.cfg.source.bucket, printable(key), st.st_size)
        return "uploaded", rec

    def _folder_id(self, folder: int) -> str | None:
        """The identity of watch folder ``folder`` to record with an upload (state.watch_folders): worked out
        again when the folder's inode changes (another drive mounted there)."""
        root = self.folders[folder]
        marker = read_marker(root)
        if marker is not None and marker == self.journal.folder_identity(str(root)):
            return marker  # the known drive (also right after 'cleanup --forget-folder' accepted one)
        now = _identity(root)
        with self._id_lock:  # parallel uploads from a new folder: one of them stamps it, the others wait
            cached = self._folder_ids.get(folder)
            if cached is not None and cached[0] == now:
                return cached[1]
            moved_to = move_target(self.cfg) if self.cfg.cleanup.inbox_after_upload == "move" else None
            found = identify(
                root, self.journal.uploads_under, self.journal.folder_identity, self.journal.accept_folder, moved_to=moved_to
            )
            self._folder_ids[folder] = (now, found)
        return found

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
            if self.stop_event.wait(0.1):
                return None
            again = path.stat()
            if (again.st_size, again.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                still_since = time.monotonic()
            st = again
        return st

    def up_to_date_locally(self, lf: LocalFile) -> bool:
        """Every thumbnail of this file is in the local folder and newer than it: nothing to do, no request."""
        st = _stat(lf.path)
        return st is not None and self._thumbnailed_locally(lf.rel, st)

    def _thumbnailed_locally(self, rel: str, st: os.stat_result) -> bool:
        """The local thumbnails folder is the truth: thumbnails newer than the file mean it is done.

        ctime, not only mtime: a file copied in with its old mtime kept (cp -p) still counts as new.
        This keeps a restart on the (empty) embedded backend, or after originals were pruned from the
        bucket, from uploading and thumbnailing everything again.
        """
        changed = max(st.st_mtime, st.st_ctime)
        for size in self.layout.sizes:
            thumb = _stat(self.thumbs_dir / self.layout.thumb_rel(rel, size))
            if thumb is None or thumb.st_mtime < changed:
                return False
        return True

    def _hash(self, path: Path, size: int, *, etag: bool) -> Hashes:
        """sha256 (for the metadata) and, with ``etag``, the ETag S3 would give this content (MD5, per part)."""
        sha = hashlib.sha256()
        if size <= self.threshold:
            data = path.read_bytes()
            sha.update(data)
            return Hashes(sha.hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest() if etag else None, data)
        parts = []
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(self.chunk), b""):
                sha.update(chunk)
                if etag:
                    parts.append(hashlib.md5(chunk, usedforsecurity=False).digest())
        if not etag:
            return Hashes(sha.hexdigest(), None, None)
        multipart = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest() + f"-{len(parts)}"
        return Hashes(sha.hexdigest(), multipart, None)

    def _put(self, path: Path, key: str, st: os.stat_result, hashes: Hashes) -> str:
        from agent.cloud.errors import call

        meta = {"sha256": hashes.sha256, "mtime": f"{st.st_mtime:.6f}", "device": ascii_meta(self.device)}
        content_type = _content_type(path.name)
        bucket = self.cfg.source.bucket
        if hashes.data is not None and len(hashes.data) == st.st_size:
            # A small file goes in one request: pace it through the bandwidth cap before sending.
            throttle(self.limiter, len(hashes.data), stop=self.stop_event)
            out = call(
                f"upload {path}",
                self.s3.put_object,
                Bucket=bucket,
                Key=key,
                Body=hashes.data,
                Metadata=meta,
                ContentType=content_type,
            )
            return str(out["ETag"]).strip('"')
        # Large files go in parts the journal remembers: a restart sends only the parts S3 does not have yet.
        resumable = ResumableUpload(
            self.s3, self.journal, bucket, part_size=self.chunk, limiter=self.limiter, stop=self.stop_event
        )
        return resumable.put(source_of(path, key, st, hashes.sha256), {"Metadata": meta, "ContentType": content_type})

    # --- watching -------------------------------------------------------------------------

    def touch(self, path: Path, *, written: bool = False) -> None:
        """Something happened to ``path``: (re)start its settle clock. ``written``: its content was written
        (IN_MODIFY), so with close events it counts as open until its writer closes it."""
        now = time.monotonic()
        with self._lock:
            self._pending[path] = (-1, -1, now)
            if written and self.close_events:
                self._open_for_write[path] = now
        self._wake.set()

    def closed(self, path: Path) -> None:
        """The writer closed ``path`` (IN_CLOSE_WRITE): the settle time runs from now (it may reopen it)."""
        with self._lock:
            self._open_for_write.pop(path, None)
        self.touch(path)

    def still_open(self, path: Path, now: float | None = None) -> bool:
        """Written to and not closed since (inotify only), within ``open_wait_cap`` of its last write."""
        now = time.monotonic() if now is None else now
        with self._lock:
            since = self._open_for_write.get(path)
            if since is None:
                return False
            if now - since < self.open_wait_cap:
                return True
            del self._open_for_write[path]
        if not path.is_symlink():  # a symlink (or a hard link) gets no close event: no need to say so
            log.info(
                "%s: still open for writing after %.0f s without a write; uploading it as it is",
                printable(str(path)),
                now - since,
            )
        return False

    def wake(self) -> None:
        """Look at the pending files now (after a resume, or once the notifications exist)."""
        self._wake.set()

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)
            self._open_for_write.pop(path, None)

    def touch_tree(self, folder: Path) -> None:
        """A folder appeared (created or moved in): its files produce no events of their own."""
        for dirpath, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not self.filter.excluded(d)]
            for name in files:
                p = Path(dirpath) / name
                if self.local_file(p) is not None:
                    self.touch(p)

    def scan_later(self, folder: Path) -> None:
        with self._lock:
            self._dirs_to_scan.add(folder)
        self._wake.set()

    # --- the Role lifecycle (agent.pipeline.role) ---

    name = "uploader"

    def start(self) -> None:
        """Watch the folders and start the upload threads."""
        self.start_watching()

    def pause(self) -> None:
        self.paused.set()

    def resume(self) -> None:
        self.paused.clear()
        self.wake()

    def start_watching(self) -> None:
        from watchdog.observers import Observer

        self._handler = _handler_class()(self)
        for root in self.folders:
            if not root.is_dir():
                folder = check_folder(root, self.journal.uploads_under)
                if folder.state == NEW:
                    # First run: ~/ThumbDrop/inbox is made for the user. Never a folder files were uploaded
                    # from: that is an unplugged drive, and an empty stand-in would read as "all deleted".
                    root.mkdir(parents=True, exist_ok=True)
                    log.info("created watch folder %s", root)
                else:
                    self._report_missing(folder)
            else:
                self._note_other_drive(root)
            observer = Observer()
            self.close_events = reports_close_write(observer)
            observer.name = f"watch-{root.name}"
            self._watches.append(self._schedule(observer, root))
            self._roots_seen.append(_identity(root))
            observer.start()
            self._observers.append(observer)
        t = threading.Thread(target=self._settle_loop, name="uploader-settle", daemon=True)
        t.start()
        self._threads.append(t)

    def _check_roots(self) -> None:
        """A watch folder deleted, or renamed and replaced, takes its inotify watch with it: watch the new one.

        inotify watches an inode, not a path: without this, files dropped into a recreated folder would wait
        for the next rescan (5 minutes by default) with no word in the log.
        """
        for i, root in enumerate(self.folders):
            now = _identity(root)
            if now == self._roots_seen[i]:
                continue
            if now is None:
                self._report_missing(check_folder(root, self.journal.uploads_under))
            else:
                observer = self._observers[i]
                if self._watches[i] is not None:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        observer.unschedule(self._watches[i])
                self._watches[i] = self._schedule(observer, root)
                if self._watches[i] is None:
                    continue
                if self._roots_seen[i] is None:
                    log.info("watch folder %s is back: watching it again", root)
                else:
                    log.info("watch folder %s was replaced: watching the new one", root)
                self.status.folder_back(str(root))
                self._note_other_drive(root)
                self.touch_tree(root)
            self._roots_seen[i] = now

    def _schedule(self, observer: Any, root: Path) -> Any:
        """Watch ``root``; None while it is not there (``_check_roots`` tries again)."""
        if not root.is_dir():
            return None
        try:
            return observer.schedule(self._handler, str(root), recursive=True)
        except OSError as exc:
            log.warning("cannot watch %s yet: %s", root, exc)
            return None

    def _note_other_drive(self, root: Path) -> None:
        """A folder that is there but holds another drive (or an empty mount point): status and the log say so
        (status shows it as WAITING, like a missing one); uploads from it go on."""
        moved_to = move_target(self.cfg) if self.cfg.cleanup.inbox_after_upload == "move" else None
        folder = check_folder(root, self.journal.uploads_under, moved_to=moved_to, accepted=self.journal.folder_identity)
        if folder.trusted:
            return
        text = f"{folder.describe()} ({folder.fix()})"
        log.warning("%s", text)
        self.status.folder_missing(folder.path, text)

    def _report_missing(self, folder: WatchFolder) -> None:
        text = (
            f"{folder.describe()} ({folder.fix()})"
            if folder.state == MISSING
            else f"watch folder {folder.path} is gone; watching it again when it is back"
        )
        log.warning("%s", text)
        self.status.folder_missing(folder.path, text)

    def _settle_loop(self) -> None:
        next_root_check = time.monotonic() + ROOT_CHECK_SECONDS
        timeout = 0.0
        while True:
            self._wake.wait(timeout)
            if self.stop_event.is_set():
                return
            self._wake.clear()
            try:
                now = time.monotonic()
                if now >= next_root_check:
                    next_root_check = now + ROOT_CHECK_SECONDS
                    self._check_roots()
                timeout = min(self._settle_tick(), next_root_check) - time.monotonic()
                timeout = max(0.01, timeout)  # at least a moment: a burst of events is handled in one round
            except Exception:  # noqa: BLE001 - this thread feeds every live upload: log the bug, never die of it
                log.exception("uploader: unexpected error while handing over settled files (continuing)")
                timeout = 1.0

    def _settle_tick(self) -> float:
        """Hand over the settled files; returns when (monotonic) the next one may be due."""
        settle = self.cfg.watch.settle_seconds
        if self.paused.is_set() or not self.provisioned.is_set() or self.held():
            self._publish_pending()
            return time.monotonic() + HELD_CHECK_SECONDS
        with self._lock:
            dirs, self._dirs_to_scan = self._dirs_to_scan, set()
        for folder in dirs:
            self.touch_tree(folder)
        now = time.monotonic()
        ready: list[Path] = []
        with self._lock:
            items = list(self._pending.items())
            retries = [p for p, t in self._retry_at.items() if t <= now]
        for p in retries:
            with self._lock:
                self._retry_at.pop(p, None)
                self._pending.setdefault(p, (-1, -1, now))
        for path, seen in items:
            st = _stat(path)
            if st is None:
                self.forget(path)
                continue
            sig = (st.st_size, st.st_mtime_ns)
            with self._lock:
                if self._pending.get(path) != seen:
                    continue  # touched again meanwhile: look at it on the next tick
                if seen[0] == -1:
                    # The settle clock starts at the event, not at this tick.
                    self._pending[path] = (*sig, seen[2])
                    settled = now - seen[2] >= settle
                elif seen[:2] != sig:
                    self._pending[path] = (*sig, now)
                    settled = False
                else:
                    settled = now - seen[2] >= settle
            if settled and not self.still_open(path, now):
                with self._lock:
                    if self._pending.get(path, (0, 0, 0.0))[:2] == sig:
                        del self._pending[path]
                        ready.append(path)
        for path in ready:
            lf = self.local_file(path)
            if lf is not None:
                self._submit(lf, self._remote_of(lf))
        self._publish_pending()
        with self._lock:
            due = [since + settle for (_size, _mtime, since) in self._pending.values()]
            due.extend(self._retry_at.values())
        # A file seen for the first time is stat'ed again after a short while even when "due" already: its
        # size and mtime must hold still between two looks.
        return max(min(due, default=float("inf")), now + 0.05) if due else float("inf")

    def _publish_pending(self) -> None:
        """Files noticed but not uploaded yet: settling, queued, uploading, or waiting to retry."""
        with self._lock:
            n = len(self._pending) + len(self._queued) + len(self._busy) + len(self._retry_at) + self._unsent
        self.status.set_pending(n)

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

    def _remote_of(self, lf: LocalFile) -> tuple[int, str] | None:
        """What the journal says the bucket holds for this file (saves a request)."""
        try:
            rec = self.journal.upload(str(lf.path))
        except UnicodeEncodeError:
            return None  # a name that is not UTF-8: upload() refuses and reports it
        return (rec.size, rec.etag) if rec and rec.key == self.layout.source_key(lf.rel) else None

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()
        for o in self._observers:
            o.stop()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for o in self._observers:
            o.join(max(0.1, deadline - time.monotonic()))
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        if not shutdown_within(self.pool, deadline, cancel_futures=True):
            log.warning("uploads still waiting on the backend at the stop deadline: left for the next start")
            return False
        return not any(t.is_alive() for t in [*self._observers, *self._threads])


class _Handler:
    """Runs under the observer's lock: filter and enqueue only, never I/O."""

    def __init__(self, uploader: Uploader) -> None:
        self.up = uploader

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        if kind == "deleted":
            self.up.forget(Path(os.fsdecode(event.src_path)))
            return
        if kind == "closed":
            path = Path(os.fsdecode(event.src_path))
            if self.up.local_file(path) is not None:
                self.up.closed(path)
            return
        if kind == "moved" and not event.is_directory:
            self.up.forget(Path(os.fsdecode(event.src_path)))
        target = event.dest_path if kind == "moved" else event.src_path
        path = Path(os.fsdecode(target))
        if event.is_directory:
            if kind in ("created", "moved"):
                # Scanning is I/O: the settle thread does it, not the observer.
                self.up.scan_later(path)
            return
        if self.up.local_file(path) is not None:
            self.up.status.count("seen")
            # Only a write (IN_MODIFY) says a writer has the file open: "created" is also what a file renamed in from
            # outside the watch looks like (IN_MOVED_TO), and a rename has no close to wait for.
            self.up.touch(path, written=kind == "modified")


def reports_close_write(observer: Any) -> bool:
    """Whether ``observer`` tells a file's close after writing apart from its other changes: inotify does
    (watchdog's ``closed``), once attribute changes have their own event (``attrib``, watchdog 5+) and no
    longer look like writes. FSEvents, Windows, kqueue and polling do not report closes at all."""
    from watchdog import events

    return type(observer).__name__.startswith("Inotify") and hasattr(events, "FileAttribEvent")


@functools.cache
def _handler_class() -> type[_Handler]:
    """_Handler as a watchdog handler; built on first use so that importing the uploader does not load watchdog."""
    from watchdog.events import FileSystemEventHandler

    return type("_WatchHandler", (_Handler, FileSystemEventHandler), {})


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, or None when it is not there (or not a folder)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".bmp": "image/bmp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".avif": "image/avif",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".m4v": "video/x-m4v",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
    ".3gp": "video/3gpp",
}


def _content_type(name: str) -> str:
    return _TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")
