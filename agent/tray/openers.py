"""How the tray shows things: folders and files in the desktop's opener (xdg-open), the config in an editor."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from agent.errors import ThumbdropError

log = logging.getLogger(__name__)


class Opener:
    """Opens folders and files (xdg-open) and the config in an editor; $THUMBDROP_TRAY_OPENER overrides both."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env

    def _base(self) -> list[str] | None:
        override = self.env.get("THUMBDROP_TRAY_OPENER")
        if override:
            return shlex.split(override)
        if sys.platform == "darwin":
            return ["open"]
        found = shutil.which("xdg-open")
        return [found] if found else None

    def open(self, target: str) -> None:
        base = self._base()
        if base is None:
            raise ThumbdropError(f"cannot open {target}: xdg-open is not installed", hint="install xdg-utils")
        self._spawn([*base, target])

    def edit(self, path: str) -> None:
        base = self._base()
        if base is not None:
            self._spawn([*base, path])
            return
        editor = self.env.get("VISUAL") or self.env.get("EDITOR")
        if not editor:
            raise ThumbdropError(f"cannot open {path} in an editor", hint="install xdg-utils or set $VISUAL")
        terminal = shutil.which("x-terminal-emulator")
        # $VISUAL/$EDITOR are usually terminal editors; the tray has no terminal, so give them one.
        self._spawn([terminal, "-e", *shlex.split(editor), path] if terminal else [*shlex.split(editor), path])

    @staticmethod
    def _spawn(argv: list[str]) -> None:
        log.info("opening: %s", " ".join(argv))
        try:
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as exc:
            raise ThumbdropError(f"cannot run {argv[0]}: {exc}") from exc


def open_dir(opener: Opener, folder: str) -> None:
    """Open ``folder``, creating it first: the puller creates the thumbnails folder on its first pull."""
    path = Path(folder).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    opener.open(str(path))
