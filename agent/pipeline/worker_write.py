"""The worker's thumbnail write: make the thumbnails of a downloaded source and upload them, or say why not
(replaced meanwhile, still arriving, or a bad file under a failure marker)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.cloud.errors import call
from agent.config.model import Config, VideoConfig
from agent.errors import IncompleteSourceError, ItemError, ObjectGoneError, ThumbdropError
from agent.imaging import ThumbnailSpec
from agent.imaging.guards import maybe_incomplete
from agent.imaging.spec import is_video
from agent.pipeline.admission import MemoryBudget, make_admitted
from agent.pipeline.bandwidth import TokenBucket, throttle
from agent.pipeline.keys import Layout, ThumbOutput, ascii_meta
from agent.pipeline.markers import clear_failed, mark_failed
from agent.state.status import Status

log = logging.getLogger("agent.pipeline.worker")


class ThumbnailWrite:
    """The thumbnail half of ``ThumbnailWorker`` (a mixin: the worker's attributes below are its own)."""

    cfg: Config
    s3: Any
    layout: Layout
    status: Status
    spec: ThumbnailSpec
    budget: MemoryBudget
    limiter: TokenBucket | None
    video: VideoConfig
    incomplete_grace: float

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
            mark_failed(self.s3, self.cfg, self.layout, rel, key, etag, sha, str(exc))
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
            clear_failed(self.s3, self.cfg, self.layout, rel)
        return outputs
