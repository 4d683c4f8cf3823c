"""The tray does not say "Up to date" while a watch folder (an unplugged drive) is missing."""

from __future__ import annotations

from agent.tray.menu import TrayView, status_line, tooltip
from tests.unit.test_tray_model import snapshot


def test_a_missing_watch_folder_replaces_up_to_date() -> None:
    idle = TrayView(snapshot=snapshot(), phase="attached")
    assert status_line(idle) == "Up to date"
    missing = snapshot(missing_folders=[{"folder": "/media/cam", "detail": "watch folder /media/cam is missing, ..."}])
    view = TrayView(snapshot=missing, phase="attached")
    assert status_line(view) == "Waiting for /media/cam (missing)"
    assert tooltip(view).startswith("thumbdrop: Waiting for /media/cam (missing)")
