"""The worker role: source-bucket events -> thumbnails in the thumbnail bucket.

Idempotent: a source whose thumbnails already carry its ETag is skipped, so a
redelivered event or moto's double event for multipart uploads (Put and
CompleteMultipartUpload) gives one thumbnail. A permanent failure writes a
failure marker (``<thumbnails.prefix>.thumbdrop-failed/<key>.json``) so that
``sync`` and the puller can report it by name until the file changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cloud.clients import Backend
from agent.cloud.errors import call, translate
from agent.cloud.events import created_in, describe_message, parse_body
from agent.config.model import Config
from agent.errors import (
    ImageError,
    IncompleteSourceError,
    ItemError,
    ObjectGoneError,
    ThumbdropError,
    TransientError,
)
from agent.imaging import ThumbnailSpec
from agent.imaging.guards import maybe_incomplete
from agent.imaging.memory import MIB
from agent.imaging.spec import PREVIEW_CONTENT_TYPE, is_video
from agent.pipeline.admission import MemoryBudget, default_memory_mb, make_admitted
from agent.pipeline.bandwidth import limiter_for, throttle
from agent.pipeline.keys import Layout, ThumbOutput, ascii_meta, is_probe, not_ours
from agent.pipeline.pools import shutdown_within
from agent.state.journal import Journal
from agent.state.processes import pid_alive
from agent.state.status import Status

log = logging.getLogger(__name__)
CHUNK = 1 << 20
# How long a truncated or empty source may be the first part of a file still being written: within this time of
# its upload it is tried again once, at the end of it (a newer version has replaced it by then), not reported. It
# covers a writer's pause between chunks plus settle and upload time where no close event tells (macOS, Windows).
INCOMPLETE_GRACE = 20.0
# Kept free in the state dir beyond a video's own bytes (and its preview's): the journal and logs live there too.
FREE_SPACE_RESERVE = 64 * MIB


def _listing(s3: Any, bucket: str, prefix: str, action: str) -> dict[str, tuple[datetime, str]]:
    """key -> (LastModified, ETag) for everything under ``prefix``: one paginated listing."""
    out: dict[str, tuple[datetime, str]] = {}
    paginator = s3.get_paginator("list_objects_v2")
    with translate(action):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = (obj["LastModified"], str(obj.get("ETag", "")).strip('"'))
    return out


def _clear_dead_tmp(root: Path) -> None:
    """Job folders of processes that no longer run are crash leftovers."""
    if not root.is_dir():
        return
    for child in root.iterdir():
        if not child.name.isdigit():
            continue
        if not pid_alive(int(child.name)):
            shutil.rmtree(child, ignore_errors=True)


@dataclass(frozen=True)
class Known:
    """What the caller already knows of a source it just uploaded: saves the worker's HEAD requests."""

    etag: str
    sha256: str
    no_thumbs: bool  # the listing showed no thumbnail of it
    no_marker: bool  # ... and no failure marker


Place = Callable[[ThumbOutput], None]


def spec_of(cfg: Config) -> ThumbnailSpec:
    t = cfg.thumbnails
    bg = tuple(int(t.background[i : i + 2], 16) for i in (1, 3, 5))
    return ThumbnailSpec(
        sizes=tuple(sorted(t.sizes, reverse=True)),
        format=t.format,
        quality=t.quality,
        progressive=t.progressive,
        background=(bg[0], bg[1], bg[2]),
        max_pixels=t.max_pixels,
        engine=t.engine,
    )


def has_thumbnails(s3: Any, cfg: Config, layout: Layout, rel: str, etag: str, outputs: list[ThumbOutput] | None = None) -> bool:
    """Every size of this source's thumbnails is in the bucket, made from the content with ``etag``;
    ``outputs`` (when given) gets each one's key, size and ETag."""
    for size in layout.sizes:
        tkey = layout.thumb_key(rel, size)
        try:
            head = call(f"read {tkey}", s3.head_object, Bucket=cfg.thumbnails.bucket, Key=tkey)
        except ObjectGoneError:
            return False
        if head.get("Metadata", {}).get("source-etag") != etag:
            return False
        if outputs is not None:
            size_bytes, tag = int(head.get("ContentLength") or 0), str(head.get("ETag", "")).strip('"')
            outputs.append(ThumbOutput(tkey, layout.thumb_rel(rel, size), size_bytes, tag, None))
    return True


def done_since(cfg: Config, backend: Backend) -> Callable[[dict[str, Any]], bool]:
    """For the events dead-letter queue: whether a message's every source now has thumbnails of its current
    content (a newer version went through after this one failed), so the message is stale."""
    layout = Layout.of(cfg)
    s3 = backend.s3

    def done(msg: dict[str, Any]) -> bool:
        events = created_in(msg)
        if not events:
            return False
        for event in events:
            rel = layout.rel_of_source_key(event.key) if event.bucket == cfg.source.bucket else None
            if rel is None:
                return False
            try:
                head = call(f"read {event.key}", s3.head_object, Bucket=cfg.source.bucket, Key=event.key)
            except ObjectGoneError:
                return False  # deleted: nothing went through; the message tells what failed
            if not has_thumbnails(s3, cfg, layout, rel, str(head["ETag"]).strip('"')):
                return False
        return True

    return done


class ThumbnailWorker:
    def __init__(self, cfg: Config, backend: Backend, status: Status, tmp_root: Path, journal: Journal | None = None) -> None:
        self.cfg = cfg
        # Remembers which source ETags have thumbnails, so a redundant event costs no request at all.
        self.journal = journal
        self.s3 = backend.s3
        self.layout = Layout.of(cfg)
        self.spec = spec_of(cfg)
        self.status = status
        self.concurrency = cfg.worker.concurrency or os.cpu_count() or 1
        # Set by the agent while remove_orphan_local_thumbnails is on (cleaner_local.DeletedLocally).
        self.deleted_locally: Callable[[str], bool] | None = None
        self.limiter = limiter_for(cfg.backend.max_bandwidth)
        # Shared by the queue's jobs and the reconcile's: decode memory stays within worker.max_memory_mb.
        self.budget = MemoryBudget((cfg.worker.max_memory_mb or default_memory_mb()) * MIB)
        _clear_dead_tmp(tmp_root)
        # One folder per process: several workers may share a state dir.
        self.tmp_root = tmp_root / str(os.getpid())
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        self._busy_lock = threading.Lock()
        self._busy: dict[str, list[Any]] = {}  # source rel -> [its lock, threads using it]
        self.incomplete_grace = INCOMPLETE_GRACE
        self.video = cfg.video
        self._warned_no_av = False
        # Previews run in their own small pool, so a long encode never holds a thumbnail job slot; at most
        # 3 x preview_jobs are accepted at once (the rest wait in the handler: back-pressure on the queue).
        self._previews = PreviewPool(cfg.video.preview_jobs) if cfg.video.preview else None
        self._closing = threading.Event()  # interrupts running encodes: their messages come back and are redone
        self._running_previews: dict[tuple[str, str], Future[None]] = {}  # (rel, etag) -> its preview job

    def close(self) -> None:
        """After its jobs are done: remove this process's (by now empty) temp folder."""
        self._closing.set()
        if self._previews is not None:
            self._previews.close()
        with contextlib.suppress(OSError):
            self.tmp_root.rmdir()  # rmdir, not rmtree: a job still running keeps its files

    # --- queue side ---------------------------------------------------------------

    def handle_message(self, msg: dict[str, Any]) -> Future[None] | None:
        """Handle one queue message. A video's preview may still be encoding on return: then the Future that
        completes with it (the consumer keeps the message in flight and its visibility extended until then)."""
        errors: list[ItemError] = []
        deferred: list[Future[None]] = []
        foreign: list[str] = []
        for event in parse_body(msg["Body"]):
            if event.bucket != self.cfg.source.bucket:
                log.info("ignored event for bucket %s (not source.bucket)", event.bucket)
                self.status.count("ignored")
                continue
            if not event.created:
                continue
            rel = self.layout.rel_of_source_key(event.key)
            if rel is None and is_probe(event.key):
                log.debug("ignored event for %s (a 'thumbdrop doctor' probe)", event.key)
                continue
            if rel is None and self.layout.foreign_source_key(event.key):
                foreign.append(event.key)
                continue
            if rel is None:
                log.info("ignored event for %s (our own output)", event.key)
                self.status.count("ignored")
                continue
            if event.etag and self._journal_done(event.key, event.etag):
                # Thumbnailed in-process already (sync, the hand-over): the event is redundant.
                self.status.count("skipped")
                continue
            try:
                self.process(rel, deferred, seen_etag=event.etag)
            except ItemError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        if foreign and not deferred:
            # Another agent's image (a shared queue): released for its owner, not consumed here.
            raise not_ours(foreign[0], "source.prefix", self.layout.source_prefix, "queues.events")
        return all_of(deferred) if deferred else None

    def describe(self, msg: dict[str, Any]) -> str:
        return describe_message(msg)

    # --- reconcile: sources whose events were lost ------------------------------------------

    def pending(self, scope: set[str] | None = None) -> tuple[set[str], set[str]]:
        """(missing, failed): sources without up-to-date thumbnails, and those with a current failure marker.

        ``scope`` limits it to some relative paths (sync: the local files); None means every source
        under source.prefix. A thumbnail pruned from the bucket after it was pulled still counts.
        """
        sources = _listing(self.s3, self.cfg.source.bucket, self.cfg.source.prefix, "list the source bucket")
        thumbs = _listing(self.s3, self.cfg.thumbnails.bucket, self.cfg.thumbnails.prefix, "list the thumbnail bucket")
        if scope is None:
            scope = {rel for key in sources if (rel := self.layout.rel_of_source_key(key)) is not None}
        missing: set[str] = set()
        failed: set[str] = set()
        for rel in scope:
            source = sources.get(self.layout.source_key(rel))
            if source is None:
                continue  # not uploaded (yet)
            src_time, src_etag = source
            marker = thumbs.get(self.layout.failure_key(rel))
            if marker is not None and marker[0] >= src_time:
                failed.add(rel)
                continue
            times = [self._thumb_time(thumbs, rel, size) for size in self.layout.sizes]
            if self.layout.wants_preview(rel):
                listed = thumbs.get(self.layout.preview_key(rel))
                times.append(listed[0] if listed is not None else _local_mtime(self.cfg, self.layout.preview_rel(rel)))
            if any(t is None for t in times):
                missing.add(rel)
            elif any(t is not None and t < src_time for t in times) and not self._done_already(rel, src_etag):
                # Older than the source: new content, unless the same bytes were uploaded again (a rescan, a
                # second agent): the thumbnails then name this very ETag and are up to date.
                missing.add(rel)
        return missing, failed

    def _thumb_time(self, thumbs: dict[str, tuple[datetime, str]], rel: str, size: int) -> datetime | None:
        listed = thumbs.get(self.layout.thumb_key(rel, size))
        return listed[0] if listed is not None else self._local_time(rel, size)

    def _local_time(self, rel: str, size: int) -> datetime | None:
        """The pulled copy's time (the puller stamps it with the object's LastModified)."""
        try:
            mtime = (Path(self.cfg.local.thumbnails_dir) / self.layout.thumb_rel(rel, size)).stat().st_mtime
        except OSError:
            return None
        return datetime.fromtimestamp(mtime, tz=UTC)

    def reconcile(self, stop: threading.Event) -> int:
        """Thumbnail every source whose event was lost (dead-lettered during an outage, or uploaded
        before the bucket notifications existed). Returns how many were made."""
        missing, _failed = self.pending()
        if self.deleted_locally is not None:
            gone = {rel for rel in missing if self.deleted_locally(rel)}
            if gone:
                log.debug("worker reconcile: %d source(s) deleted locally are not thumbnailed again", len(gone))
                missing = set(missing) - gone
        if not missing:
            return 0
        log.info("worker reconcile: %d source(s) without thumbnails", len(missing))
        made = 0

        def one(rel: str) -> None:
            nonlocal made
            if stop.is_set():
                return
            try:
                if self.process(rel) == "thumbnailed":
                    made += 1
            except ItemError:
                pass  # reported and marked by process()
            except ThumbdropError as exc:
                log.warning("worker reconcile: %s not thumbnailed yet: %s", self.layout.source_key(rel), exc)

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="worker-reconcile") as pool:
            list(pool.map(one, sorted(missing)))
        return made

    # --- one object ---------------------------------------------------------------

    def process(self, rel: str, deferred: list[Future[None]] | None = None, *, seen_etag: str | None = None) -> str:
        """Make the thumbnails of one source; returns 'thumbnailed', 'skipped', 'superseded' or 'gone'.

        A video's preview is encoded before this returns, unless ``deferred`` is given: then its Future is
        appended there and it runs in the preview pool.
        """
        return self.make(rel, seen_etag=seen_etag, deferred=deferred)[0]

    def make(
        self,
        rel: str,
        *,
        known: Known | None = None,
        place: Place | None = None,
        seen_etag: str | None = None,
        deferred: list[Future[None]] | None = None,
    ) -> tuple[str, list[ThumbOutput]]:
        """process(), also returning the thumbnails; ``place`` gets each new one while its file exists.

        ``seen_etag``: the ETag an event named; when the journal says it is done by the time this job holds the
        source's lock (another thread made it meanwhile), nothing is asked of the backend.
        """
        with self._one_at_a_time(rel):
            # The other path (an event, or the hand-over) made them while this one waited for the source's lock.
            done_etag = seen_etag or (known.etag if known is not None else None)
            if done_etag and self._journal_done(self.layout.source_key(rel), done_etag):
                self.status.count("skipped")
                # Their sizes and ETags are not known here (0, ""): a pull of them compares nothing, it downloads.
                unknown = [
                    ThumbOutput(self.layout.thumb_key(rel, s), self.layout.thumb_rel(rel, s), 0, "", None)
                    for s in self.layout.sizes
                ]
                return "skipped", unknown
            if deferred is None and known is not None:
                # The hand-over does not wait for a video's preview: it runs in the preview pool, so the thumbnail
                # jobs behind it never wait for an encode (the video's event then finds it running or done).
                deferred = []
            return self._process(rel, known, place, deferred)

    def _journal_done(self, key: str, etag: str) -> bool:
        if self.journal is None:
            return False
        try:
            return self.journal.thumbnailed(key) == etag
        except Exception:  # noqa: BLE001 - sqlite (a name it cannot hold, a closed journal): ask the backend instead
            return False

    def _remember(self, key: str, etag: str) -> None:
        if self.journal is not None:
            with contextlib.suppress(Exception):
                self.journal.record_thumbnailed(key, etag)

    @contextmanager
    def _one_at_a_time(self, rel: str) -> Iterator[None]:
        """Events for one source handled at once (moto's Put + CompleteMultipartUpload pair, a redelivery) run
        one after the other, so the second finds the first one's thumbnails and skips instead of redoing them."""
        with self._busy_lock:
            entry = self._busy.setdefault(rel, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._busy_lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._busy[rel]

    def _process(
        self, rel: str, known: Known | None = None, place: Place | None = None, deferred: list[Future[None]] | None = None
    ) -> tuple[str, list[ThumbOutput]]:
        key = self.layout.source_key(rel)
        head: Mapping[str, Any]
        if known is not None:
            etag, sha, size = known.etag, known.sha256, 0
            head = {"LastModified": datetime.now(UTC)}  # uploaded this very moment by our uploader
        else:
            try:
                head = call(f"read {key}", self.s3.head_object, Bucket=self.cfg.source.bucket, Key=key)
            except ObjectGoneError:
                log.info("skipped %s: deleted before it could be thumbnailed", key)
                return "gone", []
            etag = str(head["ETag"]).strip('"')
            sha = head.get("Metadata", {}).get("sha256", "")
            size = int(head.get("ContentLength") or 0)
        no_thumbs = known is not None and known.no_thumbs
        no_marker = known is not None and known.no_marker
        video = is_video(rel)
        want_preview = video and self._previews is not None and not self._preview_done(rel, etag)
        outputs: list[ThumbOutput] = []
        posters_done = not no_thumbs and self._done_already(rel, etag, outputs)
        if posters_done and not want_preview:
            self.status.count("skipped")
            self._remember(key, etag)
            log.debug("skipped %s: thumbnails exist for this content", key)
            return "skipped", outputs
        running = self._running_previews.get((rel, etag)) if posters_done else None
        if running is not None:
            # A second event for a video whose preview is being made (moto's double event, a redelivery): wait for
            # that one instead of encoding it twice.
            if deferred is not None:
                deferred.append(running)
            else:
                running.result()
            self.status.count("skipped")
            return "skipped", outputs
        if not posters_done:
            outputs = []
        failed_before = None if no_marker else self._known_failure(rel, etag)
        if failed_before:
            # A redelivered event for a file that already failed: same content, same verdict.
            raise ImageError(failed_before)
        if video:
            self._require_video_support(rel, key, etag, sha)
            self._check_free_space(key, size * (2 if want_preview else 1))
        self.status.begin("thumbnailing")
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="job-", dir=self.tmp_root))
        handed_over = False
        made_thumbs = False
        try:
            src = work / "source"
            try:
                size = self._download(key, etag, src) or size
            except ObjectGoneError:
                if known is None:
                    raise
                log.info("skipped %s: deleted or replaced before it could be thumbnailed", key)
                return "gone", []
            if not posters_done:
                made = self._thumbnail(rel, key, etag, sha, src, work, head, clear_marker=not no_marker)
                if made is None:
                    return "superseded", []
                outputs, made_thumbs = made, True
                self._remember(key, etag)
                if place is not None:
                    for out in outputs:
                        place(out)  # while the files exist: the local copy needs no download
            if want_preview:
                job = _PreviewJob(rel, key, etag, sha, src, work)
                if deferred is None:
                    self._preview(job)
                else:
                    deferred.append(self._submit_preview(job))
                    handed_over = True  # the preview job removes the work folder when it is done
        finally:
            if not handed_over:
                shutil.rmtree(work, ignore_errors=True)
            self.status.end("thumbnailing")
        if not made_thumbs:
            return "skipped", outputs
        self.status.done("thumbnail", time.monotonic() - started, size)
        self.status.count("thumbnailed")
        self.status.resolved(key, "worker")
        log.info("thumbnailed %s (%d size(s), %.0f ms)", key, len(outputs), (time.monotonic() - started) * 1000)
        return "thumbnailed", [ThumbOutput(o.key, o.rel, o.size, o.etag, None) for o in outputs]

    def _superseded(self, key: str, etag: str) -> bool:
        """The source now holds other content than the version that failed (or is gone)."""
        try:
            head = call(f"read {key}", self.s3.head_object, Bucket=self.cfg.source.bucket, Key=key)
        except ObjectGoneError:
            return True
        except ThumbdropError:
            return False  # cannot tell: report what we know
        return str(head["ETag"]).strip('"') != etag

    def _arriving_for(self, head: Mapping[str, Any], reason: str) -> float | None:
        """Seconds to wait before trying a source again that looks cut short and is younger than incomplete_grace
        (a slow writer's first chunks: the uploader sends each settled version), else None: report it now."""
        if not maybe_incomplete(reason):
            return None
        modified = head.get("LastModified")
        if not isinstance(modified, datetime):
            return None
        # LastModified is the upload's time; a file that sat unchanged for minutes before it went up is not being
        # written: the uploader's "mtime" metadata (the local file's) must be recent too.
        times = [modified.timestamp()]
        try:
            times.append(float(head.get("Metadata", {}).get("mtime", "")))
        except ValueError:
            pass  # uploaded by another tool: the upload time alone
        age = time.time() - min(times)
        if age >= self.incomplete_grace:
            return None
        return max(5.0, self.incomplete_grace - age)

    def _thumbnail(
        self,
        rel: str,
        key: str,
        etag: str,
        sha: str,
        src: Path,
        work: Path,
        head: Mapping[str, Any],
        *,
        clear_marker: bool = True,
    ) -> list[ThumbOutput] | None:
        """Make and upload the thumbnails (a video's: of its poster frame) of the downloaded source ``src``; None
        when it failed but a newer version has replaced it meanwhile."""
        try:
            if is_video(rel):
                from agent.imaging.video import make_poster_thumbnails

                thumbs = make_poster_thumbnails(src, self.spec, work, max_pixels=self.video.max_pixels)
            else:
                thumbs = make_admitted(self.budget, src, self.spec, work, key)
        except ItemError as exc:
            if self._superseded(key, etag):
                # A failure of an older version is nobody's concern: the new one's own event thumbnails it.
                log.info("skipped %s: replaced by a newer version while it was thumbnailed", key)
                return None
            wait = self._arriving_for(head, str(exc))
            if wait is not None:
                raise IncompleteSourceError(
                    f"{key} looks cut short ({exc}) but was uploaded moments ago: it may still be arriving",
                    retry_after=wait,
                ) from None
            self._mark_failed(rel, key, etag, sha, str(exc))
            # once: the hand-over and the key's own event can both meet the same bad version; one failure.
            self.status.fail(key, str(exc), "worker", version=sha or None, once=True)
            log.error("failed %s: %s", key, exc)
            raise
        by_size = {t.size: t for t in thumbs}
        outputs: list[ThumbOutput] = []
        for size in self.layout.sizes:
            thumb = by_size[size]
            nbytes = os.path.getsize(thumb.path)
            throttle(self.limiter, nbytes)
            with open(thumb.path, "rb") as body:
                put = call(
                    f"upload thumbnail of {key}",
                    self.s3.put_object,
                    Bucket=self.cfg.thumbnails.bucket,
                    Key=self.layout.thumb_key(rel, size),
                    Body=body,
                    ContentType=thumb.content_type,
                    Metadata={"source-key": ascii_meta(key), "source-etag": etag, "source-sha256": sha},
                )
            tkey, trel = self.layout.thumb_key(rel, size), self.layout.thumb_rel(rel, size)
            outputs.append(ThumbOutput(tkey, trel, nbytes, str(put.get("ETag", "")).strip('"'), Path(thumb.path)))
        if clear_marker:
            self._clear_failed(rel)
        return outputs

    # --- videos -----------------------------------------------------------------------------

    def _require_video_support(self, rel: str, key: str, etag: str, sha: str) -> None:
        """Without PyAV a video fails with the install hint (said once in the log), under a failure marker that
        a worker with PyAV ignores."""
        from agent.imaging import video

        if video.available():
            return
        reason = f"not thumbnailed: {video.INSTALL_HINT}"
        if not self._warned_no_av:
            self._warned_no_av = True
            log.error("%s (first video: %s); videos fail until it is installed", video.INSTALL_HINT, key)
        self._mark_failed(rel, key, etag, sha, reason, needs="video")
        self.status.fail(key, reason, "worker", once=True)
        raise ImageError(reason)

    def _check_free_space(self, key: str, need: int) -> None:
        """A video is streamed to the state dir: refuse (and retry later) rather than fill the disk."""
        try:
            free = shutil.disk_usage(self.tmp_root).free
        except OSError:
            return
        if free < need + FREE_SPACE_RESERVE:
            raise TransientError(
                f"not enough free space in {self.tmp_root} for {key}: {need // MIB} MiB needed "
                f"(+{FREE_SPACE_RESERVE // MIB} MiB reserve), {free // MIB} MiB free",
                hint="free some space there or point local.state_dir at a larger disk; the video is retried later",
            )

    def _preview_done(self, rel: str, etag: str) -> bool:
        pkey = self.layout.preview_key(rel)
        try:
            head = call(f"read {pkey}", self.s3.head_object, Bucket=self.cfg.thumbnails.bucket, Key=pkey)
        except ObjectGoneError:
            return False
        return bool(head.get("Metadata", {}).get("source-etag") == etag)

    def _submit_preview(self, job: _PreviewJob) -> Future[None]:
        assert self._previews is not None

        def run() -> None:
            try:
                self._preview(job)
            finally:
                shutil.rmtree(job.work, ignore_errors=True)

        fut = self._previews.submit(run)
        ident = (job.rel, job.etag)
        self._running_previews[ident] = fut
        fut.add_done_callback(lambda _f: self._running_previews.pop(ident, None))
        return fut

    def _preview(self, job: _PreviewJob) -> None:
        """Encode (or remux) and upload the web preview; a refusal or a bad file marks the source failed."""
        from agent.imaging.video_preview import VideoSpec, make_preview

        v = self.video
        spec = VideoSpec(True, v.preview_height, v.crf, v.max_seconds, v.max_pixels)
        self.status.begin("transcoding")
        started = time.monotonic()
        try:
            try:
                made = make_preview(job.src, job.work / "preview.mp4", spec, stop=self._closing)
            except ItemError as exc:
                self._mark_failed(job.rel, job.key, job.etag, job.sha, str(exc))
                self.status.fail(job.key, str(exc), "worker", once=True)
                log.error("no preview of %s: %s", job.key, exc)
                raise
            nbytes = os.path.getsize(made.path)
            throttle(self.limiter, nbytes)
            with open(made.path, "rb") as body:
                call(
                    f"upload the preview of {job.key}",
                    self.s3.put_object,
                    Bucket=self.cfg.thumbnails.bucket,
                    Key=self.layout.preview_key(job.rel),
                    Body=body,
                    ContentType=PREVIEW_CONTENT_TYPE,
                    Metadata={"source-key": ascii_meta(job.key), "source-etag": job.etag, "source-sha256": job.sha},
                )
        finally:
            self.status.end("transcoding")
        self.status.done("preview", time.monotonic() - started, nbytes)
        self.status.count("previewed")
        how = "remuxed" if made.remuxed else f"encoded at {made.width}x{made.height}"
        log.info("preview of %s %s (%.1f s)", job.key, how, time.monotonic() - started)

    def _done_already(self, rel: str, etag: str, outputs: list[ThumbOutput] | None = None) -> bool:
        """Every size is in the bucket, made from this content; ``outputs`` gets what they are."""
        return has_thumbnails(self.s3, self.cfg, self.layout, rel, etag, outputs)

    def _known_failure(self, rel: str, etag: str) -> str | None:
        try:
            resp = call(
                "read a failure marker", self.s3.get_object, Bucket=self.cfg.thumbnails.bucket, Key=self.layout.failure_key(rel)
            )
            marker = json.loads(resp["Body"].read(65536))
        except (ObjectGoneError, ValueError):
            return None
        if isinstance(marker, dict) and marker.get("source_etag") == etag:
            if marker.get("needs") == "video" and _has_av():
                return None  # failed only for want of PyAV, which is installed now
            return str(marker.get("reason", "failed before"))
        return None

    def _download(self, key: str, etag: str, dest: Path) -> int:
        """Stream to a file: memory stays bounded whatever the size of the original. Returns its size."""
        resp = call(f"download {key}", self.s3.get_object, Bucket=self.cfg.source.bucket, Key=key, IfMatch=etag)
        body = resp["Body"]
        try:
            with open(dest, "wb") as out:
                while True:
                    chunk = call(f"download {key}", body.read, CHUNK)
                    if not chunk:
                        break
                    throttle(self.limiter, len(chunk))
                    out.write(chunk)
        finally:
            body.close()
        return int(resp.get("ContentLength") or 0)

    def _mark_failed(self, rel: str, key: str, etag: str, sha: str, reason: str, *, needs: str = "") -> None:
        marker = {"source_key": key, "source_etag": etag, "source_sha256": sha, "reason": reason, "at": time.time()}
        if needs:
            marker["needs"] = needs  # not the file's fault: a worker that has it tries again
        try:
            call(
                f"record the failure of {key}",
                self.s3.put_object,
                Bucket=self.cfg.thumbnails.bucket,
                Key=self.layout.failure_key(rel),
                Body=json.dumps(marker).encode(),
                ContentType="application/json",
            )
        except ThumbdropError as exc:
            log.warning("could not record the failure of %s: %s", key, exc)

    def _clear_failed(self, rel: str) -> None:
        try:
            call(
                "clear a failure marker",
                self.s3.delete_object,
                Bucket=self.cfg.thumbnails.bucket,
                Key=self.layout.failure_key(rel),
            )
        except ThumbdropError as exc:
            log.debug("could not clear failure marker of %s: %s", rel, exc)


def _local_mtime(cfg: Config, rel: str) -> datetime | None:
    try:
        return datetime.fromtimestamp((Path(cfg.local.thumbnails_dir) / rel).stat().st_mtime, tz=UTC)
    except OSError:
        return None


def _has_av() -> bool:
    from agent.imaging import video

    return video.available()


@dataclass(frozen=True)
class _PreviewJob:
    rel: str
    key: str
    etag: str
    sha: str
    src: Path  # the downloaded source, inside ``work``
    work: Path  # the job's temp folder: removed when the preview is done, whatever happens


class PreviewPool:
    """A bounded pool for video previews: ``jobs`` encode at once, at most 3 x ``jobs`` accepted."""

    def __init__(self, jobs: int) -> None:
        self._pool = ThreadPoolExecutor(jobs, thread_name_prefix="worker-preview")
        self._room = threading.BoundedSemaphore(3 * jobs)

    def submit(self, fn: Any) -> Future[None]:
        self._room.acquire()
        try:
            fut: Future[None] = self._pool.submit(fn)
        except BaseException:
            self._room.release()
            raise
        fut.add_done_callback(lambda _f: self._room.release())
        return fut

    def close(self, timeout: float = 2.0) -> None:
        """Queued previews are dropped (their messages come back and are redone); running ones, told to stop by
        the worker, get ``timeout`` to notice."""
        shutdown_within(self._pool, time.monotonic() + timeout, cancel_futures=True)


def all_of(futures: list[Future[None]]) -> Future[None]:
    """One Future for several: done when all are, with the first failure."""
    if len(futures) == 1:
        return futures[0]
    combined: Future[None] = Future()
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_f: Future[None]) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
        if any(f.cancelled() for f in futures):
            combined.cancel()
            combined.set_running_or_notify_cancel()
        elif errors:
            combined.set_exception(errors[0])
        else:
            combined.set_result(None)

    for f in futures:
        f.add_done_callback(one_done)
    return combined
