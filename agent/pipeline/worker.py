"""The worker role: source-bucket events -> thumbnails in the thumbnail bucket.

Idempotent: a source whose thumbnails already carry its ETag is skipped, so a
redelivered event or moto's double event for multipart uploads (Put and
CompleteMultipartUpload) gives one thumbnail. A permanent failure writes a
failure marker (``<thumbnails.prefix>.thumbdrop-failed/<key>.json``) so that
``sync`` and the puller can report it by name until the file changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.cloud.events import describe_message, parse_body
from agent.cloud.objects import download
from agent.config.model import Config
from agent.errors import (
    ImageError,
    ItemError,
    ObjectGoneError,
)
from agent.imaging import ThumbnailSpec
from agent.imaging.memory import MIB
from agent.imaging.spec import is_video
from agent.pipeline.admission import MemoryBudget, default_memory_mb
from agent.pipeline.bandwidth import limiter_for, throttle
from agent.pipeline.keys import Layout, ThumbOutput, is_probe, not_ours
from agent.pipeline.markers import has_thumbnails, known_failure, worker_done_since
from agent.pipeline.worker_scan import WorkerScan
from agent.pipeline.worker_triage import InHand, WorkerTriage
from agent.pipeline.worker_video import PreviewJob, PreviewPool, VideoJobs, all_of, has_av
from agent.pipeline.worker_write import ThumbnailWrite
from agent.state.journal import Journal
from agent.state.processes import pid_alive
from agent.state.status import Status

log = logging.getLogger(__name__)
done_since = worker_done_since  # the events dead-letter queue's staleness check (cli cleanup, tests)
# How long a truncated or empty source may be the first part of a file still being written: within this time of
# its upload it is tried again once, at the end of it (a newer version has replaced it by then), not reported. It
# covers a writer's pause between chunks plus settle and upload time where no close event tells (macOS, Windows).
INCOMPLETE_GRACE = 20.0


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


class ThumbnailWorker(WorkerScan, WorkerTriage, ThumbnailWrite, VideoJobs):
    """A Role with no threads of its own: consumers, the hand-over and the poller run its jobs; ``stop`` and
    ``join`` interrupt the video encodes still running and remove its temp folder."""

    name = "worker"

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
        # Set by the agent while it runs a hand-over: its jobs in hand, for triage() (Handoff.pending).
        self.in_hand: InHand | None = None
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

    # --- the Role surface ---------------------------------------------------------------

    def start(self) -> None:
        """Nothing to start: the consumer, the hand-over or the poller brings the jobs."""

    def pause(self) -> None:
        """A pause holds uploads and pulls; thumbnails of what is already in the bucket go on."""

    def resume(self) -> None:
        pass

    def stop(self) -> None:
        """Nothing new is asked of it after this; the encodes are interrupted by ``join``, once the consumer
        has released their messages."""

    def join(self, timeout: float = 2.0) -> bool:
        """Interrupt the running encodes (their messages come back and are redone), drop the queued previews,
        then remove this process's (by now empty) temp folder."""
        self._closing.set()
        done = self._previews.close(timeout) if self._previews is not None else True
        with contextlib.suppress(OSError):
            self.tmp_root.rmdir()  # rmdir, not rmtree: a job still running keeps its files
        return done

    def close(self) -> None:
        """stop() and join(): for one-shot users (sync, the Lambda worker, tests)."""
        self.stop()
        self.join()

    def has_thumbnails(self, rel: str, etag: str, outputs: list[ThumbOutput] | None = None) -> bool:
        """Every size is in the bucket, made from this content; ``outputs`` gets what they are."""
        return has_thumbnails(self.s3, self.cfg, self.layout, rel, etag, outputs)

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
            if event.etag and self.journal_done(event.key, event.etag):
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
            if done_etag and self.journal_done(self.layout.source_key(rel), done_etag):
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

    def journal_done(self, key: str, etag: str) -> bool:
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
        posters_done = not no_thumbs and self.has_thumbnails(rel, etag, outputs)
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
        failed_before = None if no_marker else known_failure(self.s3, self.cfg, self.layout, rel, etag, has_av=has_av)
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
                job = PreviewJob(rel, key, etag, sha, src, work)
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

    def _download(self, key: str, etag: str, dest: Path) -> int:
        """Stream to a file: memory stays bounded whatever the size of the original. Returns its size."""
        with open(dest, "wb") as out:
            resp = download(
                self.s3,
                self.cfg.source.bucket,
                key,
                out,
                action=f"download {key}",
                if_match=etag,
                on_chunk=lambda n: throttle(self.limiter, n),
            )
        return int(resp.get("ContentLength") or 0)
