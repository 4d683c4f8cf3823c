"""agent.state.status: failures counted once per cause, and dropped when the item goes through after all."""

from __future__ import annotations

import logging

import pytest

from agent.state.status import Status


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


def test_resolved_drops_the_item_from_recent_failures_but_keeps_the_count() -> None:
    status = Status(["uploader", "worker"])
    status.fail("a.jpg", "truncated image data", "worker")
    status.fail("b.jpg", "empty file (0 bytes)", "worker")
    status.fail("a.jpg", "refused key", "puller")  # the same name in another role's namespace
    status.resolved("a.jpg", "worker")
    assert [(f.name, f.role) for f in status.failures] == [("b.jpg", "worker"), ("a.jpg", "puller")]
    assert status.counts["failed"] == 3  # a counter of events, like uploaded and thumbnailed
    status.resolved("never-failed.jpg", "worker")
    assert [f.name for f in status.failures] == ["b.jpg", "a.jpg"]


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
