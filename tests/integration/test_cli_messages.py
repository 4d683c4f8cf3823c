"""The CLI's exit codes, machine output and messages (issue 14, items 12 and 13), through main() in-process."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from agent.cli import agent_cmds
from agent.cli.main import main
from agent.ops import backend as ops_backend
from agent.service import sync as sync_module
from agent.service.sync import SyncResult


@pytest.fixture(autouse=True)
def private_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "home" / "state"))
    monkeypatch.delenv("THUMBDROP_CONFIG", raising=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, endpoint: str, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "backend": {"endpoint_url": endpoint, "max_attempts": 1, "connect_timeout": 1.0},
        "watch": {"folders": [str(tmp_path / "inbox")]},
        "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        **extra,
    }
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# --- exit codes ------------------------------------------------------------------------------------


def test_status_exits_3_when_the_backend_is_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, f"http://127.0.0.1:{closed_port()}")
    assert main(["status", "--config", str(cfg)]) == 3
    out = capsys.readouterr().out
    assert "queues:   cannot reach the backend" in out
    assert main(["status", "--config", str(cfg), "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert "cannot reach the backend" in report["queues"]["error"]


def test_status_exits_0_when_the_backend_answers(moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, moto_url)
    assert main(["status", "--config", str(cfg)]) == 0  # no queues yet: shown as missing, not an error
    assert "missing (run 'thumbdrop setup')" in capsys.readouterr().out


# --- sync --json answers on stdout, whatever happens -------------------------------------------------


def test_sync_json_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues:\n  max_receives: 0\n", encoding="utf-8")
    assert main(["sync", "--json", "--config", str(bad)]) == 2
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False and report["exit_code"] == 2
    assert report["error"]["kind"] == "config"
    assert report["error"]["problems"] == ["queues.max_receives: must be between 1 and 1000, got 0"]
    assert "invalid configuration" in captured.err  # stderr still says it for a person


def test_sync_json_backend_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, f"http://127.0.0.1:{closed_port()}")
    # An image to upload: a sync with nothing to do asks the backend nothing, so it could not fail.
    Image.new("RGB", (32, 24), "red").save(tmp_path / "inbox" / "a.jpg")
    code = main(["sync", "--json", "--config", str(cfg)])
    captured = capsys.readouterr()
    assert code == 3, captured
    report = json.loads(captured.out)
    assert report["ok"] is False and report["exit_code"] == 3
    assert "cannot reach the backend" in report["error"]["message"]
    assert "backend.endpoint_url" in report["error"]["hint"]
    # A one-shot command does not wait for the backend: it must not promise that work resumes by itself.
    assert "resumes" not in captured.err and "resumes" not in captured.out
    assert "how to fix: check backend.endpoint_url and the network" in captured.err


def test_setup_offline_does_not_promise_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, f"http://127.0.0.1:{closed_port()}")
    assert main(["setup", "--config", str(cfg)]) == 3
    err = capsys.readouterr().err
    assert "cannot reach the backend" in err and "resumes" not in err


class _FakeSync:
    """Stands in for service.sync.Sync: the CLI's output for a result, not the pipeline, is under test here."""

    result = SyncResult()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def run(self) -> SyncResult:
        return self.result


@pytest.fixture()
def fake_sync(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from contextlib import contextmanager

    @contextmanager
    def no_backend(_cfg: Any) -> Any:
        yield None

    monkeypatch.setattr(sync_module, "Sync", _FakeSync)
    monkeypatch.setattr(ops_backend, "open_backend", no_backend)
    return write_config(tmp_path, "local")


@pytest.mark.parametrize(("interrupted", "code", "why"), [(False, 1, "timed out"), (True, 130, "interrupted")])
def test_stopped_sync_names_20_unfinished_then_counts(
    fake_sync: Path, capsys: pytest.CaptureFixture[str], interrupted: bool, code: int, why: str
) -> None:
    names = [f"trip/IMG_{i:03}.jpg" for i in range(57)]
    _FakeSync.result = SyncResult(files=57, unfinished=list(names), timed_out=not interrupted, interrupted=interrupted)
    assert main(["sync", "--timeout", "5", "--config", str(fake_sync)]) == code
    lines = capsys.readouterr().out.splitlines()
    listed = [ln for ln in lines if ln.startswith("  UNFINISHED ")]
    assert listed == [f"  UNFINISHED {n}" for n in names[: agent_cmds.UNFINISHED_SHOWN]]
    assert agent_cmds.UNFINISHED_SHOWN == 20
    assert f"  57 unfinished ({why}):" in lines
    assert lines[-1] == "  ... and 37 more (run sync with --json to get every name)"


def test_a_complete_list_when_sync_was_not_stopped(fake_sync: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"n{i:02}.jpg" for i in range(25)]  # unfinished for another reason: every one is named
    _FakeSync.result = SyncResult(files=25, unfinished=list(names))
    assert main(["sync", "--config", str(fake_sync)]) == 1
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  UNFINISHED ")]) == 25


@pytest.mark.parametrize(("interrupted", "code", "kind"), [(False, 1, "timeout"), (True, 130, "interrupted")])
def test_sync_json_stopped(fake_sync: Path, capsys: pytest.CaptureFixture[str], interrupted: bool, code: int, kind: str) -> None:
    _FakeSync.result = SyncResult(
        files=30, unfinished=[f"{i}.jpg" for i in range(30)], timed_out=not interrupted, interrupted=interrupted
    )
    assert main(["sync", "--json", "--timeout", "5", "--config", str(fake_sync)]) == code
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["exit_code"] == code
    assert report["error"]["kind"] == kind and "30 item(s) unfinished" in report["error"]["message"]
    assert len(report["unfinished"]) == 30  # machine output keeps the whole list


# --- a missing watch folder is named once, with a hint -------------------------------------------------


def test_sync_names_a_missing_watch_folder_once_with_a_hint(
    moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "usb" / "camera"
    cfg = write_config(tmp_path, moto_url, watch={"folders": [str(tmp_path / "inbox"), str(gone)]})
    (tmp_path / "inbox").mkdir(exist_ok=True)
    assert main(["sync", "--config", str(cfg)]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if str(gone) in ln]
    assert len(lines) == 1, err
    assert (
        f"watch folder {gone} does not exist: nothing is uploaded from it until it does "
        f"(create it, mount the drive it is on, or fix watch.folders in {cfg})"
    ) in lines[0]


def test_sync_names_an_unplugged_drive_once_with_the_right_advice_and_in_its_json(
    moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from PIL import Image

    drive = tmp_path / "usb"
    cfg = write_config(tmp_path, moto_url, watch={"folders": [str(tmp_path / "inbox"), str(drive)]})
    drive.mkdir()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(drive / "a.jpg")
    assert main(["sync", "--config", str(cfg)]) == 0
    capsys.readouterr()
    os.rename(drive, tmp_path / "shelf")  # unplugged: the journal has an upload from it

    assert main(["sync", "--config", str(cfg)]) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if str(drive) in ln]
    assert len(lines) == 1, captured.err
    detail = (
        f"watch folder {drive} is missing, but files were uploaded from it (an unplugged drive or an unmounted share?): "
        "waiting for it; cleanup leaves its thumbnails alone (plug the drive in or mount the share (the agent waits for "
        "it); if it is gone for good, remove it from watch.folders)"
    )
    assert lines[0].endswith(detail) and "create it" not in lines[0], lines[0]
    assert f"  SKIPPED {detail}" in captured.out.splitlines(), captured.out

    assert main(["sync", "--config", str(cfg), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["missing_folders"] == [{"folder": str(drive), "detail": detail}]
    assert not drive.exists()
