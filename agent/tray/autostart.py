"""Start at login: an XDG autostart entry, ``~/.config/autostart/thumbdrop.desktop``.

The entry is ``packaging/linux/thumbdrop.desktop`` with ``Exec`` pointing at this
Python and config, so it works from a virtualenv that is not on the login PATH.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent.state.files import atomic_write

log = logging.getLogger(__name__)
FILE_NAME = "thumbdrop.desktop"

# Keep in step with packaging/linux/thumbdrop.desktop (a unit test compares them); only Exec differs.
DESKTOP_ENTRY = """\
[Desktop Entry]
Type=Application
Name=thumbdrop
GenericName=Thumbnail drop folder
Comment=Drop images into a folder; get thumbnails back
Exec={exec_line}
Icon=folder-pictures
Terminal=false
Categories=Graphics;Utility;
Keywords=thumbnail;s3;upload;sync;
StartupNotify=false
X-GNOME-Autostart-enabled=true
"""


def autostart_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "autostart"


def autostart_path(env: Mapping[str, str] | None = None) -> Path:
    return autostart_dir(env) / FILE_NAME


def tray_command(config: str | None, *, local: bool = False, python: str | None = None) -> list[str]:
    """The command line that starts this tray again at login."""
    argv = [python or sys.executable, "-m", "agent"]
    if config:
        argv += ["--config", str(Path(config).expanduser().resolve())]
    if local:
        argv.append("--local")
    return [*argv, "tray"]


def desktop_entry(argv: Sequence[str]) -> str:
    # The desktop entry spec quotes like a shell for the common cases (spaces); '%' must be doubled.
    exec_line = " ".join(shlex.quote(a) for a in argv).replace("%", "%%")
    return DESKTOP_ENTRY.format(exec_line=exec_line)


def is_enabled(env: Mapping[str, str] | None = None) -> bool:
    path = autostart_path(env)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    # A desktop that "disables" an entry rewrites it with Hidden=true instead of deleting it.
    return "Hidden=true" not in text and "X-GNOME-Autostart-enabled=false" not in text


def enable(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Path:
    path = autostart_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, desktop_entry(argv), perms=0o644)  # as readable as any desktop entry
    return path


def disable(env: Mapping[str, str] | None = None) -> None:
    autostart_path(env).unlink(missing_ok=True)


def toggle(config: str | None, *, local: bool, env: Mapping[str, str] | None = None) -> bool:
    """Start at login: switch it off if on, else on (for this config); whether it is on now."""
    if is_enabled(env):
        disable(env)
    else:
        path = enable(tray_command(config, local=local), env)
        log.info("start at login: wrote %s", path)
    return is_enabled(env)
