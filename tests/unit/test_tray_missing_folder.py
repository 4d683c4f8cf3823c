"""The tray does not say "Up to date" while a watch folder (an unplugged drive) is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.tray.menu import TrayView, status_line, tooltip
from tests.unit.control_fakes import serving
from tests.unit.test_tray_model import Env, snapshot


def test_a_missing_watch_folder_replaces_up_to_date() -> None:
    idle = TrayView(snapshot=snapshot(), phase="attached")
    assert status_line(idle) == "Up to date"
    missing = snapshot(missing_folders=[{"folder": "/media/cam", "detail": "watch folder /media/cam is missing, ..."}])
    view = TrayView(snapshot=missing, phase="attached")
    assert status_line(view) == "Waiting for /media/cam (missing)"
    assert tooltip(view).startswith("thumbdrop: Waiting for /media/cam (missing)")


def test_open_inbox_does_not_create_a_missing_watch_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    env = Env(tmp_path)
    drive = tmp_path / "drive"
    env.agent.status.folder_missing(str(drive), f"watch folder {drive} is missing")
    c = env.controller()
    with serving(env.agent):
        c.refresh()
        c.open_inbox(str(drive))
        assert not drive.exists() and env.opened == []
        assert env.sent == [("thumbdrop", f"{drive} is missing (an unplugged drive?); thumbdrop waits for it")]
        c.open_inbox(str(tmp_path / "inbox"))  # a folder not reported missing is still made and opened
        assert env.opened == [str(tmp_path / "inbox")]
        c.quit()
