"""systemd unit files for ``thumbdrop service install``: the shipped units, filled in from a config.

The units in ``agent/data/systemd/`` (also at ``packaging/systemd/``) are the one
source: usable as they are, and rewritten here line by line (ExecStart, the
config path, ReadWritePaths, ProtectHome) for this install and this config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from agent.config.cleanup_checks import move_target
from agent.config.loader import DEFAULTS_ORIGIN
from agent.config.model import Config
from agent.state.files import atomic_write

UNIT_NAME = "thumbdrop.service"
SERVICE_USER = "thumbdrop"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_CONFIG = "/etc/thumbdrop/config.yaml"
# Paths under these are hidden by ProtectHome=true; read-only keeps them visible, ReadWritePaths re-opens ours.
HOME_ROOTS = ("/home", "/root", "/run/user")


def template(*, user: bool) -> str:
    name = "thumbdrop-user.service" if user else "thumbdrop.service"
    return files("agent").joinpath("data", "systemd", name).read_text(encoding="utf-8")


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "systemd" / "user"


def thumbdrop_command() -> str:
    """How systemd should start this very install: its ``thumbdrop`` script, else ``python -m agent``."""
    script = Path(sys.executable).parent / "thumbdrop"
    if script.is_file() and os.access(script, os.X_OK):
        return _quote(str(script))
    return f"{_quote(sys.executable)} -m agent"


def _quote(text: str) -> str:
    return f'"{text}"' if any(c.isspace() for c in text) else text


def config_file(cfg: Config) -> str | None:
    return None if cfg.origin == DEFAULTS_ORIGIN else str(Path(cfg.origin).absolute())


def writable_paths(cfg: Config) -> list[str]:
    """What the agent writes besides its StateDirectory: watch folders (temp files of atomic writes), thumbnails,
    the folder uploaded files are moved to, logs."""
    paths = [*cfg.watch.folders, cfg.local.thumbnails_dir]
    if cfg.cleanup.inbox_after_upload == "move":
        paths.append(str(move_target(cfg)))
    if cfg.local.state_dir:
        paths.append(cfg.local.state_dir)
    if cfg.local.log_file and "/" in cfg.local.log_file:
        paths.append(str(Path(cfg.local.log_file).parent))
    return list(dict.fromkeys(str(Path(p).absolute()) for p in paths))


def render(cfg: Config, *, user: bool, exec_start: str | None = None) -> str:
    """The unit for this install: the shipped one with ExecStart, the config and the writable folders filled in."""
    command = f"{exec_start or thumbdrop_command()} run"
    conf = config_file(cfg)
    lines: list[str] = []
    for line in template(user=user).splitlines():
        key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else ""
        if key == "ExecStart":
            lines.append(f"ExecStart={command}")
            if user and conf:
                lines.append(f"Environment={_quote('THUMBDROP_CONFIG=' + conf)}")
        elif key == "Environment" and line.startswith("Environment=THUMBDROP_CONFIG="):
            lines.append(f"Environment={_quote('THUMBDROP_CONFIG=' + (conf or SYSTEM_CONFIG))}")
        elif key == "ReadWritePaths" and conf:
            lines.append("ReadWritePaths=" + " ".join(_quote("-" + p) for p in writable_paths(cfg)))
        elif line.startswith("#   sudo install -d ") and conf:
            # The by-hand steps create this config's folders (the move target too), not the shipped defaults.
            folders = " ".join(_quote(p) for p in writable_paths(cfg))
            lines.append(f"#   sudo install -d -o {SERVICE_USER} -g {SERVICE_USER} {folders}")
        elif line.startswith("# Config: ") and conf:
            # The comment names the config the service actually reads.
            lines.append(line.replace(SYSTEM_CONFIG, conf))
        elif key == "ProtectHome" and conf and any(p.startswith(HOME_ROOTS) for p in writable_paths(cfg)):
            lines.append("ProtectHome=read-only")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def systemd_running() -> bool:
    """sd_booted(3): the system was booted with systemd (and systemctl is there to talk to it)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


@dataclass
class InstallResult:
    path: Path
    enabled: bool
    warnings: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def install(cfg: Config, *, user: bool, unit_dir: Path | None = None, enable: bool = True) -> InstallResult:
    """Write the unit; enable and start it when systemd runs here, else say what to run where it does."""
    target_dir = unit_dir or (user_unit_dir() if user else SYSTEM_UNIT_DIR)
    path = target_dir / UNIT_NAME
    text = render(cfg, user=user)
    target_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, perms=0o644)
    result = InstallResult(path=path, enabled=False)
    ctl = ["systemctl", "--user"] if user else ["systemctl"]
    commands = [" ".join([*ctl, "daemon-reload"]), " ".join([*ctl, "enable", "--now", "thumbdrop"])]
    result.next_steps.extend(_prerequisites(cfg, user=user))
    if user:
        result.next_steps.append('loginctl enable-linger "$USER"   # keeps it running while you are logged out')
    if not enable:
        result.next_steps[:0] = commands
        return result
    if not systemd_running():
        result.warnings.append("systemd is not running on this machine: the unit was written but not enabled")
        result.next_steps[:0] = commands
        return result
    if any(step.startswith("useradd") for step in result.next_steps):
        result.warnings.append(f"the user {SERVICE_USER!r} does not exist yet: create it, then enable the unit")
        result.next_steps.extend(commands)
        return result
    for cmd in commands:
        done = subprocess.run(cmd.split(), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            result.warnings.append(f"'{cmd}' failed: {(done.stderr or done.stdout).strip()}")
            result.next_steps[:0] = commands
            return result
    result.enabled = True
    return result


def _prerequisites(cfg: Config, *, user: bool) -> list[str]:
    if user:
        return []
    steps = []
    try:
        import pwd

        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        steps.append(f"useradd --system --home-dir /var/lib/thumbdrop --shell /usr/sbin/nologin {SERVICE_USER}")
    conf = config_file(cfg)
    if conf is None:
        steps.append(f"thumbdrop init --path {SYSTEM_CONFIG}   # then edit it: folders, buckets, local.state_dir")
    elif not cfg.local.state_dir:
        steps.append(f"# set local.state_dir: /var/lib/thumbdrop in {conf}: 'thumbdrop status/pause' then find the service")
    else:
        folders = " ".join(_quote(p) for p in writable_paths(cfg))
        steps.append(f"install -d -o {SERVICE_USER} -g {SERVICE_USER} {folders}")
        steps.append(f"chgrp {SERVICE_USER} {_quote(conf)} && chmod g+r {_quote(conf)}   # the service must read its config")
        try:
            tilde = "~" in Path(conf).read_text(encoding="utf-8")
        except OSError:
            tilde = False
        if tilde:
            steps.append(f"# {conf} uses '~': for the service that is /var/lib/thumbdrop; write those folders as absolute paths")
    return steps
