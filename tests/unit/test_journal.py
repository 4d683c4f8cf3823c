"""The journal: a WAL-mode SQLite cache that survives corruption by starting over."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from agent.state.journal import Journal, UploadRecord


def test_records_round_trip_in_wal_mode(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite3")
    try:
        mode = j._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        rec = UploadRecord("/in/a.jpg", "a.jpg", 10, 123, "sha", "etag")
        j.record_upload(rec)
        assert j.upload("/in/a.jpg") == rec
        assert j.upload("/in/missing.jpg") is None
        j.record_pull("/th/a.jpg", "a.jpg", "e1", 5)
        assert j.pull("/th/a.jpg") == ("a.jpg", "e1", 5)
        assert j.record_failure("bad.jpg", "worker", "not an image") == 1
        assert j.record_failure("bad.jpg", "worker", "still not an image") == 2
        (name, role, reason, attempts, _at) = j.failures()[0]
        assert (name, role, reason, attempts) == ("bad.jpg", "worker", "still not an image", 2)
        j.clear_failure("bad.jpg")
        assert j.failures() == []
    finally:
        j.close()


def test_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    j = Journal(path)
    j.record_upload(UploadRecord("/in/a.jpg", "a.jpg", 10, 123, "sha", "etag"))
    j.close()
    again = Journal(path)
    try:
        assert again.upload("/in/a.jpg") is not None
    finally:
        again.close()


def test_a_corrupt_journal_is_moved_aside_and_rebuilt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="agent.state.journal"):
        j = Journal(path)
    try:
        assert any("unreadable" in r.getMessage() for r in caplog.records)
        assert list(tmp_path.glob("journal.sqlite3.corrupt-*")), "the corrupt file is kept for a post-mortem"
        j.record_upload(UploadRecord("/in/a.jpg", "a.jpg", 1, 1, "s", "e"))
        assert j.upload("/in/a.jpg") is not None
    finally:
        j.close()


def test_writes_after_close_are_ignored_not_raised(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite3")
    j.close()
    # An upload that outlived its sync must not crash on the closed journal.
    j.record_upload(UploadRecord("/in/a.jpg", "a.jpg", 1, 1, "s", "e"))
    j.record_pull("/th/a.jpg", "a.jpg", "e", 1)
    assert j.record_failure("x", "worker", "r") == 0
    with pytest.raises(sqlite3.ProgrammingError):
        j.upload("/in/a.jpg")
