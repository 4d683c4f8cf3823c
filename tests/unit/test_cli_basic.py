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


def test_doctor_on_a_missing_or_broken_config_gives_the_fix_that_fits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """doctor followed every config failure with "fix: fix the key(s) named", also when no key was named."""
    nope = tmp_path / "nope.yaml"
    assert main(["doctor", "--config", str(nope)]) == 2
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"FAIL  config  {nope}: file not found (create it with 'thumbdrop init', or fix --config)",
        "1 fail",
    ]
    broken = tmp_path / "broken.yaml"
    broken.write_text("watch:\n  folders: [a\n  x: 1\n", encoding="utf-8")
    assert main(["doctor", "--config", str(broken)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"FAIL  config  {broken}: line ") and "not valid YAML" in lines[1], lines
    assert lines[2] == (
        "              fix: correct the YAML there (indent with spaces, a colon and a space after each key); "
        "see config.example.yaml"
    )
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("queues:\n  max_receives: 0\n", encoding="utf-8")
    assert main(["doctor", "--config", str(bad_key)]) == 2
    assert "fix: fix the key(s) named; see config.example.yaml" in capsys.readouterr().out


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


# --- global options after the command (issue 14, item 12) -------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--config", "x.yaml", "-v", "--local", "--log-format", "json"],
        ["--config", "x.yaml", "status", "-v", "--local", "--log-format", "json"],
        ["--config", "other.yaml", "-v", "status", "--config", "x.yaml", "--local", "--log-format", "json"],
        ["dlq", "list", "--config", "x.yaml", "-v", "--local", "--log-format", "json"],  # a nested command
        ["service", "install", "--print", "--config", "x.yaml", "--verbose", "--local", "--log-format=json"],
    ],
)
def test_global_options_after_the_command(argv: list[str]) -> None:
    from agent.cli.main import build_parser

    args = build_parser().parse_args(argv)
    assert (args.config, args.verbose, args.local, args.quiet, args.log_format) == ("x.yaml", 1, True, False, "json")


def test_global_options_keep_their_defaults_when_not_given_after_the_command() -> None:
    from agent.cli.main import build_parser

    args = build_parser().parse_args(["-q", "--config", "a.yaml", "status", "--json"])
    assert (args.config, args.quiet, args.verbose, args.local, args.log_format, args.json) == (
        "a.yaml",
        True,
        0,
        False,
        "text",
        True,
    )


def test_a_commands_own_option_of_the_same_name_wins() -> None:
    """A command that defines --local (or -v) itself keeps its meaning; the global one is not added to it."""
    import argparse
    from types import SimpleNamespace

    from agent.cli.main import GROUPS, build_parser

    def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        p = sub.add_parser("probe")
        p.add_argument("--local", dest="probe_local", metavar="DIR", help="a folder, not the backend")
        p.add_argument("-v", dest="probe_version", action="store_true")

    parser = build_parser([*GROUPS, SimpleNamespace(register=register)])
    args = parser.parse_args(["probe", "--local", "/srv/x", "-v", "--config", "c.yaml"])
    assert (args.probe_local, args.probe_version, args.local, args.verbose, args.config) == ("/srv/x", True, False, 0, "c.yaml")


def test_status_reads_the_config_given_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("queues:\n  max_receives: 0\n", encoding="utf-8")
    assert main(["status", "--config", str(cfg)]) == 2
    assert "queues.max_receives" in capsys.readouterr().err


# --- init: the next commands name the file; --system writes a service's config -----------------------


def test_init_path_prints_commands_with_that_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "my dir" / "td.yaml"
    assert main(["init", "--path", str(target)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"wrote {target}\nedit it, then run:\n  thumbdrop --config '{target}' setup\n  thumbdrop --config '{target}' run\n"
    )


def test_init_default_path_needs_no_config_option(private_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert "  thumbdrop setup\n  thumbdrop run\n" in out and "--config" not in out


def test_init_system_writes_absolute_folders_and_the_service_state_dir(
    tmp_path: Path, private_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "td.yaml"
    assert main(["init", "--system", "--path", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"  sudo thumbdrop --config {target} doctor\n  sudo thumbdrop --config {target} service install\n" in out
    text = target.read_text(encoding="utf-8")
    assert "\nlocal:\n" in text and "  state_dir: /var/lib/thumbdrop\n" in text
    cfg = load_config(target)
    assert cfg.local.state_dir == "/var/lib/thumbdrop"
    folders = [*cfg.watch.folders, cfg.local.thumbnails_dir, cfg.cleanup.inbox_move_to]
    assert folders == ["/srv/thumbdrop/inbox", "/srv/thumbdrop/thumbnails", "/srv/thumbdrop/done"]
    # The general case: no value of the written file depends on whose home directory '~' is.
    values = [ln.split(":", 1)[1] for ln in text.splitlines() if not ln.lstrip().startswith("#") and ":" in ln]
    assert not [v for v in values if "~/" in v]


def test_init_under_etc_is_a_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from agent.cli import provision_cmds

    written: dict[str, str] = {}

    def fake_write(self: Path, text: str, encoding: str = "utf-8") -> int:
        written[str(self)] = text
        return len(text)

    monkeypatch.setattr(Path, "write_text", fake_write)
    monkeypatch.setattr(Path, "replace", lambda self, target: target)
    monkeypatch.setattr(Path, "mkdir", lambda self, **kw: None)
    monkeypatch.setattr(Path, "exists", lambda self: False)
    assert provision_cmds.SYSTEM_CONFIG == "/etc/thumbdrop/config.yaml"
    assert main(["init", "--path", "/etc/thumbdrop/config.yaml"]) == 0
    assert "  state_dir: /var/lib/thumbdrop\n" in written["/etc/thumbdrop/config.yaml.tmp"]
