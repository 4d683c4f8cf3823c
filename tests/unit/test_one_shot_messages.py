"""One-shot commands do not promise that work resumes by itself (issue 14, item 12)."""

from __future__ import annotations

import logging
import threading

import pytest

from agent.config import parse_config
from agent.state.status import Status


def test_the_agents_offline_line_says_work_resumes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.state.status"):
        Status(["uploader"]).offline("cannot reach the backend")
    assert "work is kept locally and resumes when it is back" in caplog.text


def test_a_one_shot_status_does_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.state.status"):
        Status(["uploader"], one_shot=True).offline("cannot reach the backend")
    assert "resumes" not in caplog.text
    assert (
        "backend unreachable: cannot reach the backend; what is not done when the command ends is listed as unfinished"
        in caplog.text
    )


def test_sync_uses_a_one_shot_status() -> None:
    from agent.service.sync import Sync

    sync = Sync(parse_config({}), None, None, timeout=None, progress=lambda *a: None, stop=threading.Event())  # type: ignore[arg-type]
    assert sync.status.one_shot
