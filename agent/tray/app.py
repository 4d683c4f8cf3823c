"""pystray glue: the icon, its menu and tooltip, kept in step with the controller's view.

Everything the tray decides lives in ``controller`` and ``menu`` (no pystray
there); this module only turns ``menu.Item``s into pystray items, swaps the
icon image when the state changes and runs the backend's main loop.
"""

from __future__ import annotations

import logging
import signal
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import FrameType
from typing import Any

from agent.config.model import Config
from agent.errors import EXIT_OK
from agent.service.runtime import state_dir
from agent.tray import icons
from agent.tray.backend import BackendChoice, NoTrayError, import_pystray
from agent.tray.controller import TrayController
from agent.tray.menu import Item, TrayView, icon_state, tooltip
from agent.tray.notify import Notifier, desktop_sender

log = logging.getLogger(__name__)
TRAY_LOG = "tray.log"


class TrayApp:
    def __init__(self, pystray: Any, controller: TrayController, backend: str) -> None:
        self.pystray = pystray
        self.controller = controller
        self.backend = backend
        self._lock = threading.Lock()
        self._items: tuple[Item, ...] = controller.menu()
        self._signature = tuple(i.signature() for i in self._items)
        self._state = ""
        self._tooltip = ""
        self._started = False
        self.icon = pystray.Icon(
            "thumbdrop", icon=icons.render("starting"), title="thumbdrop", menu=pystray.Menu(self._pystray_items)
        )
        controller.on_change = self._on_change
        controller.on_quit = self.icon.stop

    # --- menu ----------------------------------------------------------------------------

    def _pystray_items(self) -> tuple[Any, ...]:
        with self._lock:
            items = self._items
        return tuple(self._convert(i) for i in items)

    def _convert(self, item: Item) -> Any:
        p = self.pystray
        if item.separator:
            return p.Menu.SEPARATOR
        if item.submenu:
            return p.MenuItem(item.text, p.Menu(*(self._convert(i) for i in item.submenu)), enabled=item.enabled)
        action = item.action
        return p.MenuItem(
            item.text,
            (lambda _icon, _item: action()) if action is not None else None,
            checked=(lambda _item: bool(item.checked)) if item.checked is not None else None,
            enabled=item.enabled and action is not None,
            default=item.default,
        )

    # --- redraw ------------------------------------------------------------------------------

    def _on_change(self, view: TrayView) -> None:
        """Called from the controller's threads; pystray's setters hand the work to the GUI loop."""
        items = self.controller.menu()
        signature = tuple(i.signature() for i in items)
        state = icon_state(view)
        text = tooltip(view)
        with self._lock:
            self._items = items
            menu_changed, self._signature = signature != self._signature, signature
            state_changed, self._state = state != self._state, state
            tip_changed, self._tooltip = text != self._tooltip, text
        # Menu first: pystray queues each update on the GUI loop in call order, so once the title
        # shows a change the menu already has it too.
        if menu_changed:
            # Rebuilt only when what the user sees changed: a menu that is open stays as it is.
            self.icon.update_menu()
        if state_changed:
            log.info("tray state: %s", state)
            self.icon.icon = icons.render(state)
        if tip_changed:
            # The xorg backend writes the title as a Latin-1 window name: "…" or "—" would raise there.
            self.icon.title = latin1(text) if self.backend == "xorg" else text
            self._set_tooltip(text)

    def _set_tooltip(self, text: str) -> None:
        status_icon = getattr(self.icon, "_status_icon", None)
        if self.backend != "gtk" or status_icon is None:
            return  # pystray's title is the hover text elsewhere; GtkStatusIcon keeps title and tooltip apart
        from gi.repository import GLib

        GLib.idle_add(lambda: status_icon.set_tooltip_text(text) and False)

    # --- run ---------------------------------------------------------------------------------

    def run(self) -> int:
        if self.backend in ("gtk", "appindicator"):
            self._run_glib()
        else:
            previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                self.icon.run(setup=self._setup)
            finally:
                for s, h in previous.items():
                    signal.signal(s, h)
        self.controller.stop()
        log.info("tray stopped")
        return EXIT_OK

    def _run_glib(self) -> None:
        from gi.repository import GLib

        try:
            self.icon.run(setup=self._setup_glib)
        except GLib.Error as exc:
            if not self._started:
                raise NoTrayError(
                    f"the {self.backend} tray cannot start: {exc.message}",
                    hint="it needs a D-Bus session bus (start it with 'dbus-run-session thumbdrop tray'), or use 'thumbdrop run'",
                ) from None
            # On the way out pystray closes its last notification over D-Bus; with no notification
            # daemon that call fails, after the icon is already gone. Nothing is lost.
            log.debug("pystray shutdown: %s", exc.message)

    def _setup(self, icon: Any) -> None:
        self._started = True
        icon.visible = True
        self._on_change(self.controller.view())
        self.controller.start()

    def _setup_glib(self, icon: Any) -> None:
        from gi.repository import GLib

        # pystray sets SIGINT to SIG_DFL in the GLib loop (it would kill the tray mid-way); quit cleanly instead.
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self._on_glib_signal, signum)
        self._setup(icon)

    def _on_glib_signal(self, signum: int) -> bool:
        log.info("received %s: quitting", signal.Signals(signum).name)
        self.controller.quit()
        return True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: quitting", signal.Signals(signum).name)
        self.controller.quit()


def run_tray(cfg: Config, choice: BackendChoice, *, config_path: Path | None, local: bool, verbosity: int) -> int:
    """``thumbdrop tray``: show the icon, attach to or start the agent; returns when the user quits."""
    pystray = import_pystray(choice)
    _log_to_state_dir(state_dir(cfg))
    if choice.warning:
        log.warning("%s", choice.warning)
    log.info("tray starting with the %s backend", choice.name or "system")
    holder: dict[str, Any] = {}

    def pystray_notify(title: str, message: str) -> None:
        app = holder.get("app")
        if app is not None:
            app.icon.notify(message, title)

    controller = TrayController(
        cfg, config_path=config_path, local=local, verbosity=verbosity, notifier=Notifier(desktop_sender(pystray_notify))
    )
    app = holder["app"] = TrayApp(pystray, controller, choice.name)
    return app.run()


def _log_to_state_dir(path: Path) -> None:
    handler = RotatingFileHandler(path / TRAY_LOG, maxBytes=1_000_000, backupCount=2, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


_LATIN1_STAND_INS = str.maketrans({"…": "...", "—": "-", "–": "-", "‘": "'", "’": "'", "“": '"', "”": '"'})


def latin1(text: str) -> str:
    """``text`` as Latin-1 can hold it: the tooltip's typography spelled out, anything else a '?'."""
    return text.translate(_LATIN1_STAND_INS).encode("latin-1", "replace").decode("latin-1")
