"""The systemd units: hardened, notify-typed, filled in from a config, accepted by systemd-analyze."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.cli.main import main
from agent.config import load_config
from agent.config.example import render_example
from agent.service import units

REPO = Path(__file__).resolve().parents[2]


def keys(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def config(tmp_path: Path, **local: str) -> Path:
    path = tmp_path / "config.yaml"
    data = {
        "watch": {"folders": ["/srv/photos/inbox", "/home/ann/Camera Uploads"]},
        "local": {"thumbnails_dir": "/srv/photos/thumbs", **local},
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("user", [False, True])
def test_shipped_units_are_notify_typed_and_hardened(user: bool) -> None:
    k = keys(units.template(user=user))
    assert k["Type"] == ["notify"]
    assert k["Restart"] == ["on-failure"]
    assert k["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert k["WatchdogSec"] and k["NoNewPrivileges"] == ["true"]
    assert k["RestartPreventExitStatus"] == ["2"]  # a config error is not fixed by restarting
    if not user:
        assert k["User"] == ["thumbdrop"]
        assert k["ProtectSystem"] == ["strict"] and k["ReadWritePaths"]
        assert k["PrivateTmp"] == ["true"] and k["ProtectHome"] == ["true"]
        assert k["StateDirectory"] == ["thumbdrop"]


def test_packaging_copies_are_the_packaged_units() -> None:
    assert (REPO / "packaging/systemd/thumbdrop.service").read_text() == units.template(user=False)
    assert (REPO / "packaging/systemd/user/thumbdrop.service").read_text() == units.template(user=True)


def test_example_config_ships_in_the_package() -> None:
    assert (REPO / "agent/data/config.example.yaml").read_text() == render_example()


def test_system_unit_filled_in_from_the_config(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path))
    text = units.render(cfg, user=False, exec_start="/opt/thumbdrop/bin/thumbdrop")
    k = keys(text)
    assert k["ExecStart"] == ["/opt/thumbdrop/bin/thumbdrop run"]
    assert k["Environment"][0] == f"THUMBDROP_CONFIG={tmp_path / 'config.yaml'}"
    assert k["ReadWritePaths"] == ['-/srv/photos/inbox "-/home/ann/Camera Uploads" -/srv/photos/thumbs']
    # A folder under /home must stay reachable: ProtectHome=true would hide it.
    assert k["ProtectHome"] == ["read-only"]


def test_user_unit_names_the_config(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, log_file="/var/log/thumbdrop/agent.log"))
    text = units.render(cfg, user=True, exec_start="/home/ann/.local/bin/thumbdrop")
    k = keys(text)
    assert k["ExecStart"] == ["/home/ann/.local/bin/thumbdrop run"]
    assert k["Environment"] == [f"THUMBDROP_CONFIG={tmp_path / 'config.yaml'}"]
    assert "/var/log/thumbdrop" in units.writable_paths(cfg)


def test_defaults_keep_the_shipped_paths() -> None:
    cfg = load_config(None)
    k = keys(units.render(cfg, user=False, exec_start="/usr/local/bin/thumbdrop"))
    assert k["Environment"][0] == "THUMBDROP_CONFIG=/etc/thumbdrop/config.yaml"
    assert k["ReadWritePaths"] == ["-/srv/thumbdrop"]
    assert "THUMBDROP_CONFIG" not in units.render(cfg, user=True)


def verify(path: Path, *, user: bool, runtime: Path) -> str:
    cmd = ["systemd-analyze", *(["--user"] if user else []), "verify", str(path)]
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), SYSTEMD_LOG_LEVEL="notice")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    return f"rc={done.returncode} {done.stdout}{done.stderr}".strip()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt-get install systemd)")
@pytest.mark.parametrize("user", [False, True])
def test_systemd_analyze_accepts_the_units(tmp_path: Path, user: bool) -> None:
    # ExecStart must name a file that exists here, or verify complains about that alone.
    cfg = load_config(config(tmp_path))
    unit = tmp_path / ("user" if user else "system") / "thumbdrop.service"
    unit.parent.mkdir()
    unit.write_text(units.render(cfg, user=user, exec_start=sys.executable))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    assert verify(unit, user=user, runtime=runtime) == "rc=0"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt-get install systemd)")
def test_systemd_analyze_catches_a_typo(tmp_path: Path) -> None:
    # The check above is worth something only if verify speaks up about a bad key.
    unit = tmp_path / "thumbdrop.service"
    unit.write_text(
        units.render(load_config(None), user=False, exec_start=sys.executable).replace("LockPersonality", "LockPersonalty")
    )
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    assert "Unknown key" in verify(unit, user=False, runtime=runtime)


def test_install_without_systemd_writes_the_unit_and_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(units, "systemd_running", lambda: False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["--config", str(config(tmp_path)), "service", "install", "--user"]) == 0
    unit = tmp_path / "xdg/systemd/user/thumbdrop.service"
    assert keys(unit.read_text())["Type"] == ["notify"]
    out, err = capsys.readouterr()
    assert "warning: systemd is not running" in err
    assert "systemctl --user daemon-reload" in out and "systemctl --user enable --now thumbdrop" in out


def test_install_to_a_unit_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config(tmp_path)), "service", "install", "--unit-dir", str(tmp_path / "pkg")]) == 0
    text = (tmp_path / "pkg/thumbdrop.service").read_text()
    assert keys(text)["User"] == ["thumbdrop"]
    out = capsys.readouterr().out
    assert "systemctl enable --now thumbdrop" in out


def test_install_replaces_the_unit_whole_and_readable(tmp_path: Path) -> None:
    unit_dir = tmp_path / "pkg"
    unit_dir.mkdir()
    (unit_dir / "thumbdrop.service").write_text("[Unit]\nDescription=an older unit\n")
    units.install(load_config(config(tmp_path)), user=False, unit_dir=unit_dir, enable=False)
    assert os.listdir(unit_dir) == ["thumbdrop.service"]  # no temp file left beside it
    assert (unit_dir / "thumbdrop.service").stat().st_mode & 0o777 == 0o644  # systemd and every user read it
    assert keys((unit_dir / "thumbdrop.service").read_text())["Type"] == ["notify"]


def test_print_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["--config", str(config(tmp_path)), "service", "install", "--user", "--print"]) == 0
    assert "Type=notify" in capsys.readouterr().out
    assert not (tmp_path / "xdg").exists()


def test_install_with_systemd_enables_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(units, "systemd_running", lambda: True)
    monkeypatch.setattr(units.subprocess, "run", fake_run)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = units.install(load_config(config(tmp_path)), user=True)
    assert result.enabled and not result.warnings
    assert calls == [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", "thumbdrop"]]


def test_system_unit_lets_the_service_write_where_uploaded_files_are_moved(tmp_path: Path) -> None:
    path = config(tmp_path, state_dir="/var/lib/thumbdrop")
    data = yaml.safe_load(path.read_text())
    data["cleanup"] = {"inbox_after_upload": "move", "inbox_move_to": "/srv/photos/done"}
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    text = units.render(cfg, user=False, exec_start="/opt/thumbdrop/bin/thumbdrop")
    # ProtectSystem=strict: a folder not in ReadWritePaths is read-only, so every move would fail.
    assert keys(text)["ReadWritePaths"] == [
        '-/srv/photos/inbox "-/home/ann/Camera Uploads" -/srv/photos/thumbs -/srv/photos/done -/var/lib/thumbdrop'
    ]
    steps = units._prerequisites(cfg, user=False)
    assert any(s.startswith("install -d ") and s.endswith(" /srv/photos/done /var/lib/thumbdrop") for s in steps), steps
    assert (
        '#   sudo install -d -o thumbdrop -g thumbdrop /srv/photos/inbox "/home/ann/Camera Uploads" /srv/photos/thumbs '
        "/srv/photos/done /var/lib/thumbdrop\n" in text
    )
    # The header comment names the config this unit reads, not the shipped default.
    assert f"# Config: {path} (readable by the thumbdrop user)" in text
    assert "/etc/thumbdrop/config.yaml" not in text


def test_a_kept_inbox_adds_no_move_folder(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path))
    assert cfg.cleanup.inbox_after_upload == "keep"
    assert not any(p.endswith("/done") for p in units.writable_paths(cfg))
