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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cloud.clients import Backend
from agent.cloud.errors import call, translate
from agent.cloud.events import describe_message, parse_body
from agent.config.model import Config
from agent.errors import ImageError, ItemError, ObjectGoneError, ThumbdropError
from agent.imaging import ThumbnailSpec, make_thumbnails
from agent.pipeline.bandwidth import limiter_for, throttle
from agent.pipeline.keys import Layout, ThumbOutput, ascii_meta
from agent.state.journal import Journal
from agent.state.processes import pid_alive
from agent.state.status import Status

log = logging.getLogger(__name__)
CHUNK = 1 << 20


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
        self.limiter = limiter_for(cfg.backend.max_bandwidth)
        _clear_dead_tmp(tmp_root)
        # One folder per process: several workers may share a state dir.
        self.tmp_root = tmp_root / str(os.getpid())
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        self._busy_lock = threading.Lock()
        self._busy: dict[str, list[Any]] = {}  # source rel -> [its lock, threads using it]

    def close(self) -> None:
        """After its jobs are done: remove this process's (by now empty) temp folder."""
        with contextlib.suppress(OSError):
            self.tmp_root.rmdir()  # rmdir, not rmtree: a job still running keeps its files

    # --- queue side ---------------------------------------------------------------

    def handle_message(self, msg: dict[str, Any]) -> None:
        errors: list[ItemError] = []
        for event in parse_body(msg["Body"]):
            if event.bucket != self.cfg.source.bucket:
                log.info("ignored event for bucket %s (not source.bucket)", event.bucket)
                self.status.count("ignored")
                continue
            if not event.created:
                continue
            rel = self.layout.rel_of_source_key(event.key)
            if rel is None:
                log.info("ignored event for %s (outside source.prefix or our own output)", event.key)
                self.status.count("ignored")
                continue
            if event.etag and self._journal_done(event.key, event.etag):
                # Thumbnailed in-process already (sync, the hand-over): the event is redundant.
                self.status.count("skipped")
                continue
            try:
                self.process(rel, seen_etag=event.etag)
            except ItemError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

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

    def process(self, rel: str, *, seen_etag: str | None = None) -> str:
        """Make the thumbnails of one source; returns 'thumbnailed', 'skipped' or 'gone'."""
        return self.make(rel, seen_etag=seen_etag)[0]

    def make(
        self, rel: str, *, known: Known | None = None, place: Place | None = None, seen_etag: str | None = None
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
            return self._process(rel, known, place)

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

    def _process(self, rel: str, known: Known | None = None, place: Place | None = None) -> tuple[str, list[ThumbOutput]]:
        key = self.layout.source_key(rel)
        if known is not None:
            etag, sha, length = known.etag, known.sha256, 0
        else:
            try:
                head = call(f"read {key}", self.s3.head_object, Bucket=self.cfg.source.bucket, Key=key)
            except ObjectGoneError:
                log.info("skipped %s: deleted before it could be thumbnailed", key)
                return "gone", []
            etag = str(head["ETag"]).strip('"')
            sha = head.get("Metadata", {}).get("sha256", "")
            length = int(head.get("ContentLength") or 0)
        no_thumbs = known is not None and known.no_thumbs
        no_marker = known is not None and known.no_marker
        outputs: list[ThumbOutput] = []
        if not no_thumbs and self._done_already(rel, etag, outputs):
            self.status.count("skipped")
            self._remember(key, etag)
            log.debug("skipped %s: thumbnails exist for this content", key)
            return "skipped", outputs
        outputs = []
        failed_before = None if no_marker else self._known_failure(rel, etag)
        if failed_before:
            # A redelivered event for a file that already failed: same content, same verdict.
            raise ImageError(failed_before)
        self.status.begin("thumbnailing")
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="job-", dir=self.tmp_root))
        try:
            src = work / "source"
            try:
                length = self._download(key, etag, src) or length
            except ObjectGoneError:
                if known is None:
                    raise
                log.info("skipped %s: deleted or replaced before it could be thumbnailed", key)
                return "gone", []
            try:
                thumbs = make_thumbnails(src, self.spec, work)
            except ItemError as exc:
                self._mark_failed(rel, key, etag, sha, str(exc))
                self.status.fail(key, str(exc), "worker")
                log.error("failed %s: %s", key, exc)
                raise
            by_size = {t.size: t for t in thumbs}
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
                out = ThumbOutput(
                    self.layout.thumb_key(rel, size),
                    self.layout.thumb_rel(rel, size),
                    nbytes,
                    str(put.get("ETag", "")).strip('"'),
                    Path(thumb.path),
                )
                outputs.append(out)
            if not no_marker:
                self._clear_failed(rel)
            self._remember(key, etag)
            if place is not None:
                for out in outputs:
                    place(out)  # while the files exist: the local copy needs no download
        finally:
            shutil.rmtree(work, ignore_errors=True)
            self.status.end("thumbnailing")
        self.status.done("thumbnail", time.monotonic() - started, length)
        self.status.count("thumbnailed")
        self.status.resolved(key, "worker")
        log.info("thumbnailed %s (%d size(s), %.0f ms)", key, len(thumbs), (time.monotonic() - started) * 1000)
        return "thumbnailed", [ThumbOutput(o.key, o.rel, o.size, o.etag, None) for o in outputs]

    def _done_already(self, rel: str, etag: str, outputs: list[ThumbOutput] | None = None) -> bool:
        for size in self.layout.sizes:
            tkey = self.layout.thumb_key(rel, size)
            try:
                head = call(f"read {tkey}", self.s3.head_object, Bucket=self.cfg.thumbnails.bucket, Key=tkey)
            except ObjectGoneError:
                return False
            if head.get("Metadata", {}).get("source-etag") != etag:
                return False
            if outputs is not None:
                outputs.append(
                    ThumbOutput(
                        tkey,
                        self.layout.thumb_rel(rel, size),
                        int(head.get("ContentLength") or 0),
                        str(head.get("ETag", "")).strip('"'),
                        None,
                    )
                )
        return True

    def _known_failure(self, rel: str, etag: str) -> str | None:
        try:
            resp = call(
                "read a failure marker", self.s3.get_object, Bucket=self.cfg.thumbnails.bucket, Key=self.layout.failure_key(rel)
            )
            marker = json.loads(resp["Body"].read(65536))
        except (ObjectGoneError, ValueError):
            return None
        if isinstance(marker, dict) and marker.get("source_etag") == etag:
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

    def _mark_failed(self, rel: str, key: str, etag: str, sha: str, reason: str) -> None:
        marker = {"source_key": key, "source_etag": etag, "source_sha256": sha, "reason": reason, "at": time.time()}
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
