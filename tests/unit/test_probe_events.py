"""'thumbdrop doctor' writes short-lived probe objects: a running agent's roles ignore their events quietly."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.pipeline.keys import PROBE_MARK
from agent.pipeline.puller import ThumbnailPuller
from agent.pipeline.worker import ThumbnailWorker
from agent.state.status import Status


def event(bucket: str, key: str) -> dict[str, str]:
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}}}
    return {"MessageId": "m1", "Body": json.dumps({"Records": [record]})}


@pytest.mark.parametrize("shared", [False, True])
def test_probe_objects_are_not_logged_as_ignored_events(shared: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config(
        {
            "backend": {"endpoint_url": "http://127.0.0.1:9", "max_attempts": 1},
            "source": {"bucket": "src", "prefix": "originals/"},
            "thumbnails": {"bucket": "src" if shared else "thumbs", "prefix": "thumbs/"},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        }
    )
    backend = Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)  # never called: no request
    status = Status(["worker", "puller"])
    worker = ThumbnailWorker(cfg, backend, status, tmp_path / "tmp")
    puller = ThumbnailPuller(cfg, backend, status)
    with caplog.at_level(logging.INFO, logger="agent"):
        worker.handle_message(event("src", f"originals/{PROBE_MARK}0123abcd"))
        puller.handle_message(event(cfg.thumbnails.bucket, f"thumbs/{PROBE_MARK}0123abcd"))
    worker.close()
    assert [r.getMessage() for r in caplog.records] == []
    assert status.counts["ignored"] == 0
