"""cloud.objects.download: a body that breaks off is read again (tenacity); a refused GET is not (botocore did).

A tiny local HTTP server plays S3: it counts GETs, and can cut a body short or answer 500.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import botocore.config
import pytest

from agent.cloud.objects import BodyBrokenError, download
from agent.errors import TransientError

DATA = bytes(range(256)) * 400  # 100 KiB


class Store(BaseHTTPRequestHandler):
    plan: list[str]  # per GET: "short", "full" or "500"; the last one repeats
    gets: list[int]

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self.gets.append(1)
        what = self.plan[min(len(self.gets), len(self.plan)) - 1]
        if what == "500":
            body = b"<Error><Code>InternalError</Code><Message>sorry</Message></Error>"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.send_header("ETag", '"abc"')
        self.end_headers()
        self.wfile.write(DATA if what == "full" else DATA[:1000])
        if what == "short":
            self.close_connection = True

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture()
def store() -> Iterator[tuple[Any, Store]]:
    gets: list[int] = []
    handler: Any = type("H", (Store,), {"plan": ["full"], "gets": gets})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-s3", daemon=True)
    thread.start()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": 3}, s3={"addressing_style": "path"}, read_timeout=5
        ),
    )
    try:
        yield s3, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_body_that_breaks_off_is_read_again_from_the_start(store: tuple[Any, Any]) -> None:
    s3, handler = store
    handler.plan[:] = ["short", "full"]
    out = io.BytesIO()
    seen: list[int] = []
    resp = download(s3, "b", "k", out, action="download k", on_chunk=seen.append)
    assert out.getvalue() == DATA
    assert len(handler.gets) == 2
    assert resp["ETag"] == '"abc"' and "Body" not in resp


def test_a_body_that_keeps_breaking_off_gives_up_after_the_budget(store: tuple[Any, Any]) -> None:
    s3, handler = store
    handler.plan[:] = ["short"]
    with pytest.raises(BodyBrokenError, match="broke off while trying to download k"):
        download(s3, "b", "k", io.BytesIO(), action="download k", attempts=2)
    assert len(handler.gets) == 2


def test_a_refused_get_is_retried_by_botocore_only(store: tuple[Any, Any]) -> None:
    s3, handler = store
    handler.plan[:] = ["500"]
    with pytest.raises(TransientError) as err:
        download(s3, "b", "k", io.BytesIO(), action="download k")
    assert not isinstance(err.value, BodyBrokenError)
    assert len(handler.gets) == 3  # botocore's total_max_attempts, not multiplied by ours
