"""What the thumbnail bucket says of a source: whether its outputs were made from its current content (their
``source-etag``), and its failure marker (``<thumbnails.prefix>.thumbdrop-failed/<key>.json``), which lets
``sync`` and the puller report a bad file by name until the file changes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.cloud.events import ObjectEvent, created_in
from agent.config.model import Config
from agent.errors import ObjectGoneError, ThumbdropError
from agent.pipeline.keys import Layout, ThumbOutput

log = logging.getLogger("agent.pipeline.worker")


def made_from(s3: Any, bucket: str, key: str, etag: str) -> dict[str, Any] | None:
    """The HEAD of ``key`` when it was made from the source content with ``etag``, else None (or gone)."""
    try:
        head = call(f"read {key}", s3.head_object, Bucket=bucket, Key=key)
    except ObjectGoneError:
        return None
    return dict(head) if head.get("Metadata", {}).get("source-etag") == etag else None


def has_thumbnails(s3: Any, cfg: Config, layout: Layout, rel: str, etag: str, outputs: list[ThumbOutput] | None = None) -> bool:
    """Every size of this source's thumbnails is in the bucket, made from the content with ``etag``;
    ``outputs`` (when given) gets each one's key, size and ETag."""
    for size in layout.sizes:
        tkey = layout.thumb_key(rel, size)
        head = made_from(s3, cfg.thumbnails.bucket, tkey, etag)
        if head is None:
            return False
        if outputs is not None:
            size_bytes, tag = int(head.get("ContentLength") or 0), str(head.get("ETag", "")).strip('"')
            outputs.append(ThumbOutput(tkey, layout.thumb_rel(rel, size), size_bytes, tag, None))
    return True


def done_since(
    rel_of: Callable[[ObjectEvent], str | None], done: Callable[[ObjectEvent, str], bool]
) -> Callable[[dict[str, Any]], bool]:
    """The one skeleton of the dead-letter staleness checks (worker and puller): a message is stale when it
    names created objects, each one ours (``rel_of`` gives its relative path, else None) and ``done``."""

    def stale(msg: dict[str, Any]) -> bool:
        events = created_in(msg)
        return bool(events) and all((rel := rel_of(e)) is not None and done(e, rel) for e in events)

    return stale


def worker_done_since(cfg: Config, backend: Backend) -> Callable[[dict[str, Any]], bool]:
    """For the events dead-letter queue: whether a message's every source now has thumbnails of its current
    content (a newer version went through after this one failed), so the message is stale."""
    layout = Layout.of(cfg)
    s3 = backend.s3

    def done(event: ObjectEvent, rel: str) -> bool:
        try:
            head = call(f"read {event.key}", s3.head_object, Bucket=cfg.source.bucket, Key=event.key)
        except ObjectGoneError:
            return False  # deleted: nothing went through; the message tells what failed
        return has_thumbnails(s3, cfg, layout, rel, str(head["ETag"]).strip('"'))

    return done_since(lambda e: layout.rel_of_source_key(e.key) if e.bucket == cfg.source.bucket else None, done)


def known_failure(s3: Any, cfg: Config, layout: Layout, rel: str, etag: str, *, has_av: Callable[[], bool]) -> str | None:
    """The reason recorded for this very content (``etag``), or None: not failed, or failed for another version."""
    try:
        resp = call("read a failure marker", s3.get_object, Bucket=cfg.thumbnails.bucket, Key=layout.failure_key(rel))
        marker = json.loads(resp["Body"].read(65536))
    except (ObjectGoneError, ValueError):
        return None
    if isinstance(marker, dict) and marker.get("source_etag") == etag:
        if marker.get("needs") == "video" and has_av():
            return None  # failed only for want of PyAV, which is installed now
        return str(marker.get("reason", "failed before"))
    return None


def mark_failed(
    s3: Any, cfg: Config, layout: Layout, rel: str, key: str, etag: str, sha: str, reason: str, *, needs: str = ""
) -> None:
    marker = {"source_key": key, "source_etag": etag, "source_sha256": sha, "reason": reason, "at": time.time()}
    if needs:
        marker["needs"] = needs  # not the file's fault: a worker that has it tries again
    try:
        call(
            f"record the failure of {key}",
            s3.put_object,
            Bucket=cfg.thumbnails.bucket,
            Key=layout.failure_key(rel),
            Body=json.dumps(marker).encode(),
            ContentType="application/json",
        )
    except ThumbdropError as exc:
        log.warning("could not record the failure of %s: %s", key, exc)


def clear_failed(s3: Any, cfg: Config, layout: Layout, rel: str) -> None:
    try:
        call("clear a failure marker", s3.delete_object, Bucket=cfg.thumbnails.bucket, Key=layout.failure_key(rel))
    except ThumbdropError as exc:
        log.debug("could not clear failure marker of %s: %s", rel, exc)
