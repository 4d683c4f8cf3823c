"""One retry budget per request: botocore's backend.max_attempts, never multiplied by a retry loop of ours.

A tiny local HTTP server answers every request with a 500 and counts them: one failing call must reach it
exactly ``max_attempts`` times (before #15, tenacity's 3 tries on top of botocore's made an upload 3 x that).
"""

from __future__ import annotations

import ast
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.cloud.clients import Backend
from agent.config import parse_config
from agent.errors import TransientError
from agent.pipeline.uploader import Uploader
from agent.state.journal import Journal
from agent.state.status import Status

ATTEMPTS = 3
ERROR = b"<Error><Code>InternalError</Code><Message>we are sorry</Message></Error>"


class Always500(BaseHTTPRequestHandler):
    counts: dict[str, int]
    lock: threading.Lock

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.lock:
            self.counts[self.command] = self.counts.get(self.command, 0) + 1
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(ERROR)))
        self.end_headers()
        self.wfile.write(ERROR)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture()
def failing_store() -> Iterator[tuple[str, dict[str, int]]]:
    counts: dict[str, int] = {}
    handler = type("Handler", (Always500,), {"counts": counts, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="always-500", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_one_failing_upload_is_sent_max_attempts_times(tmp_path: Path, failing_store: tuple[str, dict[str, int]]) -> None:
    url, counts = failing_store
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    photo = inbox / "a.jpg"
    photo.write_bytes(b"not really a jpeg, but the store never looks")
    old = time.time() - 3600  # long settled: no settle wait
    os.utime(photo, (old, old))
    cfg = parse_config(
        {
            "backend": {"endpoint_url": url, "max_attempts": ATTEMPTS},
            "watch": {"folders": [str(inbox)]},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        }
    )
    backend = Backend(cfg.backend, endpoint_url=url, local=False)
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        uploader = Uploader(cfg, backend, Status(["uploader"]), journal)
        lf = uploader.local_file(photo)
        assert lf is not None
        with pytest.raises(TransientError):
            uploader.upload(lf)
    finally:
        journal.close()
    assert counts == {"PUT": ATTEMPTS}


def test_a_long_poll_is_tried_once(failing_store: tuple[str, dict[str, int]]) -> None:
    """The consumer loop is the long poll's retry (with its Backoff): botocore does not retry it too."""
    from agent.cloud.errors import call

    url, counts = failing_store
    cfg = parse_config({"backend": {"endpoint_url": url, "max_attempts": ATTEMPTS}})
    backend = Backend(cfg.backend, endpoint_url=url, local=False)
    with pytest.raises(TransientError):
        call("receive", backend.receiver(1).receive_message, QueueUrl=f"{url}/123/q", WaitTimeSeconds=1)
    assert counts == {"POST": 1}


def test_no_retry_loop_wraps_a_backend_call_in_agent() -> None:
    """The rule of agent/cloud/errors.py: no tenacity (or other retry library) on top of botocore's retries; the
    one exception reads a broken-off body again (agent/cloud/objects.py), which botocore cannot."""
    root = Path(__file__).resolve().parents[2] / "agent"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] in ("tenacity", "retrying", "backoff") for n in names):
                offenders.append(path.relative_to(root).as_posix())
    assert offenders == ["cloud/objects.py"]
