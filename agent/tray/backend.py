"""Which pystray backend to use, decided before pystray is imported (importing it picks one for good).

Measured with pystray 0.19.5: ``gtk`` gives a real menu and a default (left-click)
action; ``appindicator`` needs a StatusNotifier host on D-Bus and has no default
action; ``xorg`` has no menu and never receives clicks on some panels (pystray
issue #151) and fails to dock now and then; ``dummy`` cannot run. Without a
display, ``import pystray`` raises Xlib's DisplayNameError.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.errors import UsageError

log = logging.getLogger(__name__)
BACKENDS = ("gtk", "appindicator", "xorg")


class NoTrayError(UsageError):
    """No tray can be shown here (no display, missing libraries); exit 2 with a way out."""

    title = "No tray available"


@dataclass(frozen=True)
class BackendChoice:
    name: str  # a pystray backend name, or "" on macOS/Windows where pystray has one choice
    warning: str = ""


def has_display(env: Mapping[str, str]) -> bool:
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def gi_module_loads(namespace: str, version: str) -> bool:
    """Whether PyGObject is installed and can load the typelib ``namespace-version``."""
    try:
        import gi

        gi.require_version(namespace, version)
        __import__(f"gi.repository.{namespace}")
    except (ImportError, ValueError, AttributeError):
        return False
    return True


def gtk_available() -> bool:
    return gi_module_loads("Gtk", "3.0")


def appindicator_available() -> bool:
    return gtk_available() and (gi_module_loads("AyatanaAppIndicator3", "0.1") or gi_module_loads("AppIndicator3", "0.1"))


def choose_backend(
    setting: str,
    *,
    env: Mapping[str, str] | None = None,
    platform: str | None = None,
    gtk: Callable[[], bool] = gtk_available,
    appindicator: Callable[[], bool] = appindicator_available,
) -> BackendChoice:
    """The backend for ``tray.backend`` (auto, gtk, appindicator, xorg); raise NoTrayError when none can work."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if platform in ("darwin", "win32"):
        return BackendChoice("")
    if not has_display(env):
        raise NoTrayError(
            "there is no graphical display here (neither DISPLAY nor WAYLAND_DISPLAY is set)",
            hint="run the agent without a tray: 'thumbdrop run' (or install the systemd unit); "
            "'thumbdrop status' and 'thumbdrop pause' work from any terminal",
        )
    if setting != "auto":
        if setting in ("gtk", "appindicator") and not gtk():
            raise NoTrayError(
                f"tray.backend is {setting!r} but PyGObject (GTK 3) is not installed",
                hint="install it: pip install 'thumbdrop[tray]' plus the system packages gir1.2-gtk-3.0 "
                "and libgirepository1.0-dev; or set tray.backend: auto; or use 'thumbdrop run'",
            )
        if setting == "appindicator" and not appindicator():
            raise NoTrayError(
                "tray.backend is 'appindicator' but the AppIndicator typelib is not installed",
                hint="install gir1.2-ayatanaappindicator3-0.1, or set tray.backend: auto",
            )
        return BackendChoice(setting, _xorg_warning() if setting == "xorg" else "")
    wayland_only = not env.get("DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland"
    if wayland_only and appindicator():
        # GtkStatusIcon is an X11 (XEmbed) icon: Wayland panels only show StatusNotifier items.
        return BackendChoice("appindicator")
    if env.get("DISPLAY") and gtk():
        return BackendChoice("gtk")
    if appindicator():
        return BackendChoice("appindicator")
    if env.get("DISPLAY"):
        return BackendChoice("xorg", _xorg_warning())
    raise NoTrayError(
        "this Wayland session has no X display for the xorg tray and PyGObject's AppIndicator is not installed",
        hint="install PyGObject and gir1.2-ayatanaappindicator3-0.1, or use 'thumbdrop run'",
    )


def _xorg_warning() -> str:
    return (
        "using pystray's xorg tray backend: its icon has no menu on many panels and may not dock; "
        "install PyGObject (pip install 'thumbdrop[tray]') for the gtk backend"
    )


def import_pystray(choice: BackendChoice) -> object:
    """Import pystray with ``choice``'s backend; NoTrayError (not a traceback) when that fails."""
    if choice.name:
        os.environ["PYSTRAY_BACKEND"] = choice.name
    errors: tuple[type[BaseException], ...] = (ImportError, ValueError, OSError)
    try:
        import Xlib.error

        errors += (Xlib.error.DisplayError, Xlib.error.ConnectionClosedError)
    except ImportError:
        pass
    try:
        import pystray
    except errors as exc:
        raise NoTrayError(
            f"cannot start the {choice.name or 'system'} tray backend: {type(exc).__name__}: {exc}",
            hint="check DISPLAY and that a tray (system tray / StatusNotifier host) is running, "
            "install 'thumbdrop[tray]', or use 'thumbdrop run'",
        ) from None
    return pystray
