"""The uploader's view of files still open for writing (inotify's close-write), without a backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import FileClosedEvent, FileCreatedEvent, FileModifiedEvent, FileMovedEvent

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.pipeline.uploader import Uploader
from agent.pipeline.watching import _Handler
from agent.state.journal import Journal
from agent.state.status import Status


@pytest.fixture()
def uploader(tmp_path: Path) -> Iterator[Uploader]:
    cfg = parse_config(
        {
            "backend": {"endpoint_url": "http://127.0.0.1:9", "max_attempts": 1},  # never called
            "watch": {"folders": [str(tmp_path / "inbox")], "settle_seconds": 0.5},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        }
    )
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    up = Uploader(cfg, Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False), Status(["uploader"]), journal)
    try:
        yield up
    finally:
        up.pool.shutdown()
        journal.close()


def test_a_written_file_is_open_until_its_close_write_where_the_platform_reports_it(uploader: Uploader, tmp_path: Path) -> None:
    path = tmp_path / "inbox" / "a.jpg"
    handler = _Handler(uploader.watcher)
    uploader.watcher.close_events = True
    handler.on_any_event(FileModifiedEvent(str(path)))
    assert uploader.watcher.still_open(path)
    handler.on_any_event(FileModifiedEvent(str(path)))
    assert uploader.watcher.still_open(path)
    handler.on_any_event(FileClosedEvent(str(path)))
    assert not uploader.watcher.still_open(path)
    assert path in uploader.watcher._pending  # the settle time runs again from the close: the writer may reopen it


def test_a_file_renamed_in_or_moved_is_not_waited_for(uploader: Uploader, tmp_path: Path) -> None:
    """A rename into the folder looks like "created" (IN_MOVED_TO) and never gets a close event."""
    uploader.watcher.close_events = True
    handler = _Handler(uploader.watcher)
    created = tmp_path / "inbox" / "renamed-in.jpg"
    handler.on_any_event(FileCreatedEvent(str(created)))
    assert created in uploader.watcher._pending and not uploader.watcher.still_open(created)
    src, dest = tmp_path / "inbox" / "a.part.jpg", tmp_path / "inbox" / "a.jpg"
    handler.on_any_event(FileModifiedEvent(str(src)))
    handler.on_any_event(FileMovedEvent(str(src), str(dest)))
    assert not uploader.watcher.still_open(src) and not uploader.watcher.still_open(dest)


def test_without_close_events_only_the_settle_time_applies(uploader: Uploader, tmp_path: Path) -> None:
    """macOS, Windows, kqueue, polling: a write says nothing about when the writer is done."""
    path = tmp_path / "inbox" / "a.jpg"
    uploader.watcher.close_events = False
    _Handler(uploader.watcher).on_any_event(FileModifiedEvent(str(path)))
    assert path in uploader.watcher._pending and not uploader.watcher.still_open(path)


def test_a_file_kept_open_without_writes_is_sent_after_the_cap(uploader: Uploader, tmp_path: Path) -> None:
    path = tmp_path / "inbox" / "a.jpg"
    uploader.watcher.close_events = True
    uploader.touch(path, written=True)
    now = time.monotonic()
    assert uploader.watcher.still_open(path, now + uploader.watcher.open_wait_cap - 1)
    assert not uploader.watcher.still_open(path, now + uploader.watcher.open_wait_cap + 1)
    assert not uploader.watcher.still_open(path)  # forgotten: a later write opens the wait again
    uploader.touch(path, written=True)
    assert uploader.watcher.still_open(path)
