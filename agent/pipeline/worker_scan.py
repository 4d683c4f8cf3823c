"""The worker's reconcile: sources whose events were lost (dead-lettered during an outage, or uploaded before
the bucket notifications existed), found by one listing of each bucket."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cloud.errors import translate
from agent.config.model import Config
from agent.errors import ItemError, ThumbdropError
from agent.pipeline.keys import Layout, ThumbOutput

log = logging.getLogger("agent.pipeline.worker")


def _listing(s3: Any, bucket: str, prefix: str, action: str) -> dict[str, tuple[datetime, str]]:
    """key -> (LastModified, ETag) for everything under ``prefix``: one paginated listing."""
    out: dict[str, tuple[datetime, str]] = {}
    paginator = s3.get_paginator("list_objects_v2")
    with translate(action):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = (obj["LastModified"], str(obj.get("ETag", "")).strip('"'))
    return out


class WorkerScan:
    """The reconcile half of ``ThumbnailWorker`` (a mixin: the worker's attributes below are its own)."""

    cfg: Config
    s3: Any
    layout: Layout
    concurrency: int
    deleted_locally: Callable[[str], bool] | None

    if TYPE_CHECKING:  # the worker's own

        def has_thumbnails(self, rel: str, etag: str, outputs: list[ThumbOutput] | None = None) -> bool: ...

        def process(self, rel: str, deferred: Any = None, *, seen_etag: str | None = None) -> str: ...

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
            elif any(t is not None and t < src_time for t in times) and not self.has_thumbnails(rel, src_etag):
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


def _local_mtime(cfg: Config, rel: str) -> datetime | None:
    try:
        return datetime.fromtimestamp((Path(cfg.local.thumbnails_dir) / rel).stat().st_mtime, tz=UTC)
    except OSError:
        return None
