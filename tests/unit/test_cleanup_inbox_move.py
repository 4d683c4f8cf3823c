"""inbox_after_upload: move takes the folders it empties with it (never the watch folder, never one with other content)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.config.loader import parse_config
from agent.pipeline.cleaner import LocalStat, Snapshot
from agent.pipeline.cleaner_local import select_local
from agent.pipeline.cleanup_run import Plan, execute


def test_moved_files_leave_no_empty_folders_behind(tmp_path: Path) -> None:
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    cfg = parse_config(
        {
            "watch": {"folders": [str(inbox)]},
            "local": {"thumbnails_dir": str(tmp_path / "th")},
            "cleanup": {"inbox_after_upload": "move", "inbox_move_to": str(done)},
        }
    )
    photos = ["trip/day1/a.jpg", "trip/day1/deeper/b.jpg", "trip/day2/c.jpg", "top.jpg"]
    for rel in photos:
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(b"photo")
    (inbox / "trip" / "day2" / "notes.txt").write_text("not an image: stays, and so does its folder")
    (inbox / "untouched").mkdir()  # empty, but nothing was moved out of it: not ours to remove
    later = (inbox / "top.jpg").stat().st_ctime + 5
    snap = Snapshot(local_thumbs={rel: LocalStat(3, later) for rel in photos})
    moves, notes = select_local(cfg, snap, [], uploaded_from=lambda _p: None)
    assert notes == [] and len(moves) == 4
    backend: Any = SimpleNamespace(s3=None)  # local moves only: the backend is never called
    outcome = execute(Plan(moves, [], []), cfg, backend)
    assert outcome.errors == []
    assert sorted(p.relative_to(done).as_posix() for p in done.rglob("*.jpg")) == sorted(photos)
    left = sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*"))
    assert left == ["trip", "trip/day2", "trip/day2/notes.txt", "untouched"]
    (inbox / "trip" / "day2" / "notes.txt").unlink()
    os.rmdir(inbox / "untouched")
    (inbox / "last.jpg").write_bytes(b"photo")  # the watch folder itself stays even when emptied
    last = select_local(cfg, Snapshot(local_thumbs={"last.jpg": LocalStat(3, later + 10)}), [], uploaded_from=lambda _p: None)
    execute(Plan(last[0], [], []), cfg, backend)
    assert inbox.is_dir() and sorted(p.name for p in inbox.rglob("*")) == ["day2", "trip"]


def test_each_removed_local_file_is_logged_by_name(tmp_path: Path, caplog: Any) -> None:
    import logging

    from agent.pipeline.cleaner import LOCAL, Deletion

    cfg = parse_config({"watch": {"folders": [str(tmp_path / "inbox")]}, "local": {"thumbnails_dir": str(tmp_path / "th")}})
    thumb = tmp_path / "th" / "trip" / "a.jpg"
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"thumb")
    why = f"local thumbnail; its source {tmp_path / 'inbox' / 'trip' / 'a.jpg'} was deleted"
    backend: Any = SimpleNamespace(s3=None)  # local deletions only: the backend is never called
    with caplog.at_level(logging.INFO, logger="agent.pipeline.cleanup_run"):
        outcome = execute(Plan([Deletion(LOCAL, str(thumb), why, 5)], [], []), cfg, backend)
    assert outcome.errors == [] and not thumb.exists()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("INFO", f"cleanup: removed {thumb} ({why})")]
