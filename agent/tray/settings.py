"""The tray's settings: the config file it watches for saves (to apply them) and opens for 'Edit settings…'."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.config import user_config_path
from agent.errors import ConfigError
from agent.state.files import atomic_write

log = logging.getLogger(__name__)


class ConfigWatch:
    """The tray's config file (``path``; None: the user's default one, where a starter config goes)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.stamp = stamp(self.watched())

    def watched(self) -> Path | None:
        return self.path if self.path is not None else user_config_path()

    def saved(self) -> Path | None:
        """The config file if it was saved since the last look (an editor saved it), else None."""
        path = self.watched()
        now = stamp(path)
        if now == self.stamp or path is None:
            return None
        self.stamp = now
        return path if now is not None else None  # None: deleted, or mid-save by an editor that renames

    def editable(self) -> Path:
        """The file to edit: the tray's config; with none, a starter config written where it will be found."""
        if self.path is not None:
            return self.path
        from agent.config.example import render_example

        path = user_config_path()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, render_example(), perms=0o644)
            log.info("wrote a starter config to %s", path)
        self.path = path
        self.stamp = stamp(path)  # creating it is not an edit: nothing to reload yet
        return path


def not_applied(exc: ConfigError, path: Path) -> tuple[str, str]:
    """The notification (title, text) for a saved config that does not load."""
    shown = exc.problems[:6]
    more = len(exc.problems) - len(shown)
    return (
        f"thumbdrop: settings not applied ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''})",
        "\n".join(shown) + (f"\nand {more} more" if more else "") + f"\nin {path}",
    )


def stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
