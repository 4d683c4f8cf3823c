"""queues.mode poll: the roles find their work by listing the buckets, with no queue or topic.

The worker streams the source prefix page by page and compares each source with the thumbnails of one size
(and the failure markers), listed once as ``key -> LastModified``: one listing is held, never two. A source is
work when its thumbnail is missing or older than it (unless the journal says these very bytes were done: a
re-upload). Its thumbnails record the source ETag (``source-etag``), which the worker checks with a HEAD of the
candidates only, as for an event. The puller streams the thumbnail prefix against the local folder.

Several workers on one prefix: a lease object (``<thumbnails.prefix>.thumbdrop-lease/<rel>``) written with
``If-None-Match: *`` where the store honours it, and/or ``worker.shard: N/M``. A candidate that turns out done
by the time its job runs (another worker was faster) is counted as ``duplicates`` in the status.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from agent.backoff import Backoff
from agent.cloud.errors import call, translate
from agent.config.model import Config
from agent.errors import ResourceMissingError, ThumbdropError
from agent.pipeline.keys import FAILED_DIR, LEASE_DIR, Layout
from agent.pipeline.role import RoleThreads

log = logging.getLogger(__name__)

# A lease older than this is a crashed worker's: it is broken and taken over.
LEASE_SECONDS = 600.0


def listing(s3: Any, bucket: str, prefix: str, action: str) -> Iterator[tuple[str, float, str]]:
    """(key, LastModified epoch, ETag) in key order, one page (<= 1000 keys) at a time: nothing is held."""
    paginator = s3.get_paginator("list_objects_v2")
    pages = iter(paginator.paginate(Bucket=bucket, Prefix=prefix))
    while True:
        with translate(action):
            page = next(pages, None)
        if page is None:
            return
        for obj in page.get("Contents", []):
            yield obj["Key"], obj["LastModified"].timestamp(), str(obj.get("ETag", "")).strip('"')


def in_shard(key: str, shard: str | None) -> bool:
    """worker.shard 'N/M': whether this worker takes ``key`` from the listings (a stable hash, same on every host)."""
    if not shard:
        return True
    n, _, m = shard.partition("/")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % int(m) == int(n)


def worker_candidates(
    layout: Layout,
    sources: Iterator[tuple[str, float, str]],
    thumb_times: dict[str, float],
    *,
    done_already: Callable[[str, str], bool] = lambda _rel, _etag: False,
    shard: str | None = None,
) -> Iterator[tuple[str, str]]:
    """(rel, source ETag) of each source that needs thumbnails: missing or older than the source (and not the
    same bytes done already), with no failure marker as new as the source."""
    size = layout.sizes[0]
    for key, src_time, etag in sources:
        rel = layout.rel_of_source_key(key)
        if rel is None or not in_shard(key, shard):
            continue
        marker = thumb_times.get(layout.failure_key(rel))
        if marker is not None and marker >= src_time:
            continue  # failed for this version: 'dlq redrive' (deleting the marker) retries it
        thumb = thumb_times.get(layout.thumb_key(rel, size))
        if thumb is None or (thumb < src_time and not done_already(rel, etag)):
            yield rel, etag


def thumb_times(s3: Any, cfg: Config, layout: Layout) -> dict[str, float]:
    """key -> LastModified of the first size's thumbnails and of the failure markers (one listing each)."""
    bucket = cfg.thumbnails.bucket
    prefixes = [layout.thumb_prefix + FAILED_DIR]
    if len(layout.sizes) > 1:
        prefixes.append(f"{layout.thumb_prefix}{layout.sizes[0]}/")
    else:
        prefixes = [layout.thumb_prefix]  # the markers are under it too
    out: dict[str, float] = {}
    for prefix in prefixes:
        for key, stamp, _etag in listing(s3, bucket, prefix, "list the thumbnail bucket"):
            out[key] = stamp
    return out


class Leases:
    """Lease objects written with If-None-Match: * (only where the store honours it; probed once)."""

    def __init__(self, s3: Any, cfg: Config, layout: Layout) -> None:
        self.s3 = s3
        self.bucket = cfg.thumbnails.bucket
        self.layout = layout
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.enabled: bool | None = None  # None: not probed yet

    def key(self, rel: str) -> str:
        return f"{self.layout.thumb_prefix}{LEASE_DIR}{rel}"

    def probe(self) -> bool:
        if self.enabled is None:
            from agent.cloud.capabilities import _conditional_writes
            from agent.pipeline.keys import PROBE_MARK

            class _B:  # _conditional_writes only needs .s3
                s3 = self.s3

            # A key of its own: workers starting together must not see each other's probe.
            key = f"{self.layout.thumb_prefix}{PROBE_MARK}lease-{uuid.uuid4().hex}"
            cap = _conditional_writes(_B(), self.bucket, key)  # type: ignore[arg-type]
            self.enabled = bool(cap.supported)
            if not self.enabled:
                log.warning(
                    "poll mode: the store does not honour If-None-Match (%s): no leases, so several workers on one "
                    "prefix may thumbnail one image at once (harmless, counted as duplicates); worker.shard splits "
                    "the key space instead",
                    cap.detail,
                )
        return self.enabled

    def take(self, rel: str) -> bool:
        """Whether this worker may thumbnail ``rel`` now (always true without leases)."""
        if not self.probe():
            return True
        body = json.dumps({"owner": self.owner, "at": time.time()}).encode()
        for _attempt in range(2):
            try:
                self.s3.put_object(Bucket=self.bucket, Key=self.key(rel), Body=body, IfNoneMatch="*")
                return True
            except Exception as exc:  # noqa: BLE001 - botocore's ClientError; anything else: no lease, no job
                status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status not in (409, 412):
                    log.debug("lease of %s not taken: %s", rel, exc)
                    return False
            if not self._break_stale(rel):
                return False
        return False

    def _break_stale(self, rel: str) -> bool:
        try:
            head = call("read a lease", self.s3.head_object, Bucket=self.bucket, Key=self.key(rel))
        except ThumbdropError:
            return True  # gone meanwhile: try again
        if time.time() - head["LastModified"].timestamp() < LEASE_SECONDS:
            return False  # another worker holds it
        self.release(rel)
        return True

    def release(self, rel: str) -> None:
        if not self.enabled:
            return
        try:
            call("release a lease", self.s3.delete_object, Bucket=self.bucket, Key=self.key(rel))
        except ThumbdropError as exc:
            log.debug("lease of %s not released (it expires): %s", rel, exc)


class Poller(RoleThreads):
    """The listing passes of one agent in poll mode; thumbnails and pulls go to the hand-over's pools.

    A Role: ``start`` runs its loop (a pass every ``queues.poll_seconds``); ``pause`` skips the puller's passes
    (a pause holds transfers; thumbnails go on); ``stop`` ends the wait between passes and a pass at once."""

    def __init__(
        self,
        cfg: Config,
        s3: Any,
        handoff: Any,
        status: Any,
        *,
        worker: Any,
        puller: Any,
        on_missing: Callable[[ResourceMissingError], None] = lambda _exc: None,
    ) -> None:
        super().__init__("poller")
        self.on_missing = on_missing
        self.cfg = cfg
        self.s3 = s3
        self.handoff = handoff
        self.status = status
        self.worker = worker
        self.puller = puller
        self.layout = Layout.of(cfg)
        self.leases = Leases(s3, cfg, self.layout)
        self._lock = threading.Lock()
        self._listed: set[str] = set()  # rels a listing handed to the worker, not finished yet
        self._own: set[str] = set()  # rels this agent uploaded and handed over itself, not finished yet

    def start(self) -> None:
        self.spawn(self._loop)

    def _loop(self) -> None:
        backoff = Backoff(first=2.0, cap=30.0)
        while not self.stop_event.is_set():
            wait = self.cfg.queues.poll_seconds
            try:
                if self.worker is not None:
                    self.worker_pass(self.stop_event)
                if self.puller is not None and not self.paused.is_set():
                    self.puller_pass()
                backoff.reset()
            except ThumbdropError as exc:
                if exc.kind == "transient":
                    self.status.offline(str(exc))
                    wait = backoff.next()
                elif isinstance(exc, ResourceMissingError):
                    self.on_missing(exc)
                else:
                    log.error("poll: listing failed: %s", exc)
            except Exception:  # noqa: BLE001 - a bug must not end the listings for good
                log.exception("poll: listing pass failed; trying again at the next one")
            if self.stop_event.is_set():
                return
            self._wake.wait(wait)
            self._wake.clear()

    def handing(self, rel: str) -> None:
        """An upload of this agent goes to the worker now: a listing meanwhile must not take it again."""
        with self._lock:
            self._own.add(rel)

    def worker_pass(self, stop: threading.Event) -> int:
        """List the source prefix against the thumbnails; hand each candidate to the worker. Returns how many."""
        times = thumb_times(self.s3, self.cfg, self.layout)
        sources = listing(self.s3, self.cfg.source.bucket, self.layout.source_prefix, "list the source bucket")
        deleted = getattr(self.worker, "deleted_locally", None)
        n = 0
        w = self.worker

        def done_already(rel: str, etag: str) -> bool:  # the journal first (no request), then HEADs
            return bool(w.journal_done(self.layout.source_key(rel), etag) or w.has_thumbnails(rel, etag))

        for rel, _etag in worker_candidates(self.layout, sources, times, done_already=done_already, shard=self.cfg.worker.shard):
            if stop.is_set():
                break
            if deleted is not None and deleted(rel):
                continue
            with self._lock:
                if rel in self._listed or rel in self._own:
                    continue  # still in flight (an earlier pass, or this agent's own upload)
            if not self.leases.take(rel):
                continue  # another worker has it
            with self._lock:
                self._listed.add(rel)
            self.handoff.thumbnail(rel)
            n += 1
        return n

    def finished(self, rel: str, stage: str, result: str) -> None:
        """The hand-over's listener: a listed job ended (release its lease; a skip means another was faster)."""
        if stage != "thumbnail":
            return
        with self._lock:
            listed = rel in self._listed
            self._listed.discard(rel)
            self._own.discard(rel)
        if listed:
            self.leases.release(rel)
            if result == "skipped":
                self.status.count("duplicates")

    def puller_pass(self) -> dict[str, int]:
        return dict(self.puller.reconcile())


# --- failure markers: the dead letters of poll mode -------------------------------------------


def failure_markers(s3: Any, cfg: Config, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The worker's failure markers (``.thumbdrop-failed/``): item (source key), reason, when."""
    layout = Layout.of(cfg)
    out: list[dict[str, Any]] = []
    prefix = layout.thumb_prefix + FAILED_DIR
    for key, stamp, _etag in listing(s3, cfg.thumbnails.bucket, prefix, "list the failure markers"):
        rel = layout.rel_of_failure_key(key)
        if rel is None:
            continue
        reason = "failed"
        try:
            body = call("read a failure marker", s3.get_object, Bucket=cfg.thumbnails.bucket, Key=key)["Body"].read(65536)
            reason = str(json.loads(body).get("reason", reason))
        except (ThumbdropError, ValueError, AttributeError) as exc:
            log.debug("failure marker %s unreadable: %s", key, exc)
        out.append({"item": layout.source_key(rel), "reason": reason, "at": stamp, "marker": key})
        if limit is not None and len(out) >= limit:
            break
    return out


def clear_markers(s3: Any, cfg: Config, keys: list[str]) -> tuple[int, list[str]]:
    """Delete failure markers (<= 1000 per request) so the next listing retries them: (removed, failures)."""
    removed, failed = 0, list[str]()
    for i in range(0, len(keys), 1000):
        batch = keys[i : i + 1000]
        resp = call(
            "remove failure markers",
            s3.delete_objects,
            Bucket=cfg.thumbnails.bucket,
            Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
        )
        errors = resp.get("Errors", [])
        failed.extend(f"{e.get('Key')}: {e.get('Code')} {e.get('Message', '')}".strip() for e in errors)
        removed += len(batch) - len(errors)
    return removed, failed
