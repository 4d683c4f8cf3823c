"""The CLI in-process: init, config errors, usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli.main import main
from agent.config import find_config_path, load_config, user_config_path
from agent.config.example import render_example

THREE_MISTAKES = "backend:\n  regoin: eu-west-1\nqueues:\n  max_receives: 0\nthumbnails:\n  format: gif\n"


@pytest.fixture(autouse=True)
def private_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("THUMBDROP_CONFIG", raising=False)
    return home


def test_init_writes_config_that_loads(private_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    path = private_home / ".config" / "thumbdrop" / "config.yaml"
    assert user_config_path() == path
    assert path.read_text(encoding="utf-8") == render_example()
    assert str(path) in capsys.readouterr().out
    assert find_config_path(None) == path
    cfg = load_config(path)
    assert cfg.origin == str(path)
    assert cfg.watch.folders == [str(private_home / "ThumbDrop" / "inbox")]
    assert not list(path.parent.glob("*.tmp"))


def test_init_twice_needs_force(private_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    path = private_home / ".config" / "thumbdrop" / "config.yaml"
    path.write_text("# my edits\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["init"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert path.read_text(encoding="utf-8") == "# my edits\n"
    assert main(["init", "--force"]) == 0
    assert path.read_text(encoding="utf-8") == render_example()


def test_init_path_option(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "td.yaml"
    assert main(["init", "--path", str(target)]) == 0
    assert load_config(target).origin == str(target)


def test_init_honours_config_option(tmp_path: Path) -> None:
    target = tmp_path / "cfg" / "td.yaml"
    assert main(["--config", str(target), "init"]) == 0
    assert target.exists()


def test_three_mistakes_exit_2_and_list_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(THREE_MISTAKES, encoding="utf-8")
    assert main(["--config", str(cfg), "setup"]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err
    for key in ("backend.regoin", "queues.max_receives", "thumbnails.format"):
        assert key in err
    assert "did you mean 'region'" in err
    assert "Traceback" not in err


def test_config_from_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "env-bad.yaml"
    cfg.write_text("queues:\n  max_receives: 0\n", encoding="utf-8")
    monkeypatch.setenv("THUMBDROP_CONFIG", str(cfg))
    assert main(["setup", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "queues.max_receives: must be between 1 and 1000, got 0" in err


def test_missing_config_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml"), "status"]) == 2
    err = capsys.readouterr().err
    assert "file not found" in err
    assert "Traceback" not in err


def test_invalid_yaml_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("backend: [\n", encoding="utf-8")
    assert main(["--config", str(cfg), "setup"]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "line " in err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "frobnicate" in capsys.readouterr().err


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unknown_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["setup", "--frobnicate"])
    assert info.value.code == 2


def test_verbose_and_quiet_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-v", "-q", "init"])
    assert info.value.code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("thumbdrop ")


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "sync", "setup", "teardown", "init", "status"):
        assert command in out
