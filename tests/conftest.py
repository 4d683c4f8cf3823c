"""Shared fixtures: a moto server over HTTP on loopback, state reset, thread-leak guard."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest
import requests

# Never talk to real AWS from the tests, whatever the developer's environment holds.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "THUMBDROP_CONFIG"):
    os.environ.pop(_var, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One ThreadedMotoServer for the session, on 127.0.0.1 and a free port; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def moto_url(moto_server: str) -> Iterator[str]:
    """The session server, reset to empty before the test."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    yield moto_server


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves threads of its own running (watchdog's BaseThread idea)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [
            t
            for t in threading.enumerate()
            if t not in before
            and t.is_alive()
            and not t.name.startswith(("ThreadPoolExecutor", "Dummy"))
            and "moto" not in t.name.lower()
            and "werkzeug" not in t.name.lower()
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads leaked: {[t.name for t in leaked]}"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() and setup_logging() rewire logging: give the next test the logging it had."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("agent", "botocore", "boto3", "s3transfer", "urllib3", "watchdog", "PIL")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, lvl in levels.items():
        logging.getLogger(n).setLevel(lvl)
