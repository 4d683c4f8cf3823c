"""The uploader's parts and the small public surface sync and the agent use (issue 15 item 3)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from agent.config.loader import parse_config
from agent.pipeline.local_files import LocalFile
from agent.pipeline.uploader import Uploader, UploadOutcome
from agent.state.journal import Journal, UploadRecord
from agent.state.status import Status

OLD_WORDS = ["uploaded", "unchanged", "gone", "failed", "postponed", "busy", "writing", "known-bad"]


def test_upload_outcomes_are_the_words_logs_and_listeners_always_saw() -> None:
    assert [o.value for o in UploadOutcome] == OLD_WORDS
    for outcome in UploadOutcome:
        assert outcome == outcome.value and f"{outcome}" == outcome.value and str(outcome) == outcome.value
        assert {outcome.value: 1}[outcome] == 1  # counted by word (the benchmarks' Counter of outcomes)
    assert json.dumps([UploadOutcome.KNOWN_BAD]) == '["known-bad"]'


def test_listeners_are_told_each_outcome_until_removed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = parse_config(
        {
            "backend": {"endpoint_url": "http://127.0.0.1:9"},  # never called: the file is gone before any request
            "watch": {"folders": [str(inbox)], "settle_seconds": 0},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        }
    )
    journal = Journal(tmp_path / "journal.sqlite3")
    up = Uploader(cfg, None, Status(["uploader"]), journal)
    heard: list[tuple[str, UploadOutcome, UploadRecord | None, str]] = []

    def listener(lf: LocalFile, outcome: UploadOutcome, rec: UploadRecord | None, reason: str) -> None:
        heard.append((lf.rel, outcome, rec, reason))

    try:
        lf = up.local_file(inbox / "a.jpg")
        assert lf is not None
        up.add_listener(listener)
        fut = up.submit(lf, None)
        assert fut is not None and fut.result(timeout=10) is UploadOutcome.GONE
        assert heard == [("a.jpg", UploadOutcome.GONE, None, "")]
        up.remove_listener(listener)
        up.remove_listener(listener)  # not listening: nothing happens
        fut = up.submit(lf, None)
        assert fut is not None and fut.result(timeout=10) is UploadOutcome.GONE
        assert len(heard) == 1
    finally:
        up.stop()
        up.close(wait=True)
        journal.close()
    assert up.submit(lf, None) is None  # closed: nothing is queued any more


def test_sync_uses_only_the_uploaders_public_api() -> None:
    """sync reached into uploader.stop_event, .pool, ._submit and .listeners; the uploader's inside may change."""
    source = Path(__file__).parents[2] / "agent" / "service" / "sync.py"
    reached = sorted(
        node.attr
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "uploader"
        and (node.attr.startswith("_") or node.attr in ("stop_event", "pool", "listeners", "paused"))
    )
    assert reached == []
