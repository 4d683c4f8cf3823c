"""The uploader after an outage (issue 14 item 3): one success makes every postponed file due at once, and their
backoff starts again from its first step, instead of each file sitting out a delay that grew to 60 s."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import botocore.exceptions as bx
from PIL import Image

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.pipeline.uploader import Uploader
from agent.state.journal import Journal
from agent.state.status import Status


class Switchable:
    """An S3 client whose put_object fails with a refused connection while ``down``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.down = True

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)
        if name != "put_object":
            return real

        def put(**kwargs: Any) -> Any:
            if self.down:
                raise bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
            return real(**kwargs)

        return put


def test_one_success_makes_every_postponed_upload_due_and_resets_the_backoff(moto_url: str, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = parse_config(
        {
            "backend": {"endpoint_url": moto_url, "addressing_style": "path", "max_attempts": 1},
            "watch": {"folders": [str(inbox)], "settle_seconds": 0},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        },
        origin="test",
    )
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False, pool_size=8)
    backend.s3.create_bucket(Bucket=cfg.source.bucket)
    journal = Journal(tmp_path / "journal.sqlite3")
    status = Status(["uploader"])
    up = Uploader(cfg, backend, status, journal)
    s3 = up.uploads.s3 = Switchable(backend.s3)  # type: ignore[assignment]
    try:
        files = []
        for name in ("a.jpg", "b.jpg"):
            Image.new("RGB", (64, 48), (200, 10, 10)).save(inbox / name, "JPEG")
            lf = up.local_file(inbox / name)
            assert lf is not None
            files.append(lf)
        a, b = files
        for _ in range(3):  # a long outage: a's delay grows
            assert up.uploads._upload_guarded(a, None) == "postponed"
        assert up.uploads._upload_guarded(b, None) == "postponed"
        assert status.offline_since is not None
        assert up.uploads._retry_at[a.path] - time.monotonic() > 10, "a's backoff did not grow: nothing to test"

        s3.down = False
        assert up.uploads._upload_guarded(b, None) == "uploaded"
        assert up.uploads._retry_at[a.path] <= time.monotonic(), "a still waits out the delay it got during the outage"
        assert not up.uploads._backoff, "the backoff must start again from its first step"
        assert status.offline_since is None
    finally:
        up.pool.shutdown()
        journal.close()
