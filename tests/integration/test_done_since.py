"""The dead-letter staleness checks of the worker and the puller: one skeleton (agent.pipeline.markers.done_since)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.config.model import Config
from agent.pipeline.puller import done_since as puller_done_since
from agent.pipeline.worker import done_since as worker_done_since
from tests.e2e.conftest import s3_event


def setup(moto_url: str, tmp_path: Path) -> tuple[Config, Backend]:
    cfg = parse_config(
        {
            "backend": {"endpoint_url": moto_url, "addressing_style": "path"},
            "watch": {"folders": [str(tmp_path / "inbox")]},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        }
    )
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False)
    for bucket in (cfg.source.bucket, cfg.thumbnails.bucket):
        backend.s3.create_bucket(Bucket=bucket)
    return cfg, backend


def message(*events: dict[str, Any]) -> dict[str, Any]:
    return {"Body": json.dumps({"Records": [r for e in events for r in e["Records"]]})}


def test_the_pull_check_is_stale_once_every_thumbnail_is_here_as_in_the_bucket(moto_url: str, tmp_path: Path) -> None:
    cfg, backend = setup(moto_url, tmp_path)
    stale = puller_done_since(cfg, backend)
    thumbs = cfg.thumbnails.bucket
    backend.s3.put_object(Bucket=thumbs, Key="a b.jpg", Body=b"thumbnail a")
    backend.s3.put_object(Bucket=thumbs, Key="c.jpg", Body=b"thumbnail c")
    msg = message(s3_event(thumbs, "a b.jpg"), s3_event(thumbs, "c.jpg"))
    assert not stale(msg)  # nothing pulled yet
    local = Path(cfg.local.thumbnails_dir)
    local.mkdir(parents=True)
    (local / "a b.jpg").write_bytes(b"thumbnail a")
    assert not stale(msg)  # one of two
    (local / "c.jpg").write_bytes(b"thumbnail c")  # same bytes: the MD5 is the ETag
    assert stale(msg)
    assert not stale(message(s3_event("another-bucket", "c.jpg")))  # not ours: never stale
    assert not stale(message(s3_event(thumbs, "c.jpg", name="ObjectRemoved:Delete")))  # nothing created
    assert not stale({"Body": json.dumps({"Event": "s3:TestEvent"})})


def test_the_events_check_is_stale_once_every_source_has_thumbnails_of_its_content(moto_url: str, tmp_path: Path) -> None:
    cfg, backend = setup(moto_url, tmp_path)
    stale = worker_done_since(cfg, backend)
    src = backend.s3.put_object(Bucket=cfg.source.bucket, Key="a.jpg", Body=os.urandom(100))
    etag = str(src["ETag"]).strip('"')
    msg = message(s3_event(cfg.source.bucket, "a.jpg"))
    assert not stale(msg)
    backend.s3.put_object(Bucket=cfg.thumbnails.bucket, Key="a.jpg", Body=b"t", Metadata={"source-etag": "older"})
    assert not stale(msg)  # made from another version
    backend.s3.put_object(Bucket=cfg.thumbnails.bucket, Key="a.jpg", Body=b"t", Metadata={"source-etag": etag})
    assert stale(msg)
    assert not stale(message(s3_event(cfg.source.bucket, "gone.jpg")))  # deleted: nothing went through
