"""agent.state.status: failures counted once per cause, and dropped when the item goes through after all."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from agent.state.journal import Journal
from agent.state.status import STATUS_FILE, Status, read_published


def test_a_relayed_failure_is_counted_once() -> None:
    status = Status(["worker", "puller"])
    status.fail("photos/bad.jpg", "truncated image data", "worker")
    status.fail("photos/bad.jpg", "truncated image data", "worker", once=True)  # the puller relaying the marker
    status.fail("photos/other.jpg", "empty file (0 bytes)", "worker", once=True)  # a remote worker's: counted
    assert status.counts["failed"] == 2
    assert [f.name for f in status.failures] == ["photos/bad.jpg", "photos/other.jpg"]


def test_the_same_item_failing_for_a_new_reason_is_listed_again() -> None:
    status = Status(["worker"])
    status.fail("a.jpg", "truncated image data", "worker")
    status.fail("a.jpg", "not an image", "worker", once=True)
    assert [f.reason for f in status.failures] == ["truncated image data", "not an image"]


def test_resolved_drops_the_item_from_recent_failures_and_the_failed_count() -> None:
    status = Status(["uploader", "worker"])
    resolved: list[tuple[str, str]] = []
    status.on_resolved = lambda name, role: resolved.append((name, role))
    status.fail("a.jpg", "truncated image data", "worker")  # an older version of a.jpg
    status.fail("a.jpg", "truncated image data", "worker")
    status.fail("b.jpg", "empty file (0 bytes)", "worker")
    status.fail("a.jpg", "refused key", "puller")  # the same name in another role's namespace
    status.resolved("a.jpg", "worker")  # the newer version went through
    assert [(f.name, f.role) for f in status.failures] == [("b.jpg", "worker"), ("a.jpg", "puller")]
    assert status.counts["failed"] == 2  # what still fails: b.jpg, and a.jpg's thumbnail on the puller side
    assert status.snapshot()["failed_total"] == 4  # the metrics' counter never steps back
    assert resolved == [("a.jpg", "worker")]
    status.resolved("never-failed.jpg", "worker")
    assert [f.name for f in status.failures] == ["b.jpg", "a.jpg"]
    assert status.counts["failed"] == 2 and resolved == [("a.jpg", "worker")]


def test_a_remembered_failure_counts_as_failing_until_resolved() -> None:
    """After a restart status listed 2 recent failures (from the journal) under "0 failed": they still fail."""
    status = Status(["uploader", "worker"])
    reported: list[str] = []
    status.on_failure = lambda name, *_rest: reported.append(name)
    status.remember("bad.jpg", "not an image", "worker")
    status.remember("bad.jpg", "not an image", "worker")  # every rescan finds it again: counted once
    status.remember("cut.jpg", "truncated image data", "worker")
    assert status.counts["failed"] == 2 and len(status.failures) == 2
    assert status.snapshot()["failed_total"] == 0 and reported == []  # not a new failure: not reported again
    status.fail("cut.jpg", "truncated image data", "worker")  # it failed again: listed once, counted twice
    status.resolved("bad.jpg", "worker")
    status.resolved("cut.jpg", "worker")
    assert status.counts["failed"] == 0 and not status.failures


def test_names_are_kept_escaped_so_the_journal_and_the_log_line_after_them_work(tmp_path: Path) -> None:
    """A name that is not UTF-8 (a surrogate from os.fsdecode) made SQLite raise out of fail(), so the caller's log
    line never ran; a newline split the status line."""
    journal = Journal(tmp_path / "journal.sqlite3")
    status = Status(["uploader"])
    status.on_failure = lambda name, reason, role, _version: journal.record_failure(name, role, reason)
    try:
        status.fail("/in/caf\udce9.jpg", "cannot read /in/caf\udce9.jpg", "uploader")
        status.fail("/in/two\nlines.jpg", "bad", "uploader")
        status.pulled("/thumbs/caf\udce9.jpg.jpg")
        names = [f.name for f in status.failures]
        assert names == ["/in/caf\\xe9.jpg", "/in/two\\nlines.jpg"]
        assert status.failures[0].reason == "cannot read /in/caf\\xe9.jpg"
        assert [row[0] for row in journal.failures()] == ["/in/two\\nlines.jpg", "/in/caf\\xe9.jpg"]
        assert status.snapshot()["recent_thumbnails"] == ["/thumbs/caf\\xe9.jpg.jpg"]
        json.dumps(status.snapshot(), ensure_ascii=False).encode("utf-8")  # the status file is valid UTF-8
        status.resolved("/in/caf\udce9.jpg", "uploader")  # resolved by its raw name, as the uploader calls it
        assert [f.name for f in status.failures] == ["/in/two\\nlines.jpg"]
    finally:
        journal.close()


def test_going_offline_and_back_is_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    status = Status(["uploader"])
    with caplog.at_level(logging.INFO, logger="agent.state.status"):
        status.offline("cannot reach the backend (connection refused)")
        status.offline("cannot reach the backend (timed out)")  # the same outage: no second line
        status.online()
        status.online()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("backend unreachable: cannot reach the backend (connection refused)")
    assert lines[1].startswith("backend reachable again after")
    assert status.offline_since is None


def test_published_status_is_whole_and_has_the_umask_mode(tmp_path: Path) -> None:
    status = Status(["worker"])
    status.publish(tmp_path)
    status.publish(tmp_path)  # replaces the first
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # no temp file left beside it
    umask = os.umask(0o022)
    os.umask(umask)
    # A system service's status.json is read by 'thumbdrop status' of other users when its umask allows.
    assert (tmp_path / STATUS_FILE).stat().st_mode & 0o777 == 0o666 & ~umask
    published = read_published(tmp_path)
    assert published is not None and published["pid"] == os.getpid()
