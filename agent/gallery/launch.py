"""Finding a running gallery and opening it: shared by 'thumbdrop open' and the tray's "Open gallery"."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from agent.errors import EXIT_BACKEND, ThumbdropError


class GalleryNotRunningError(ThumbdropError):
    exit_code = EXIT_BACKEND
    title = "No gallery"


def running_gallery(state_dir: Path) -> dict[str, Any] | None:
    """The runtime record of a gallery that answers on its port, or None."""
    from agent.gallery.security import read_runtime
    from agent.state.processes import pid_alive

    info = read_runtime(state_dir)
    if info is None or not isinstance(info.get("port"), int) or not pid_alive(int(info.get("pid") or 0)):
        return None
    try:
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=2.0):
            return info
    except OSError:
        return None


def entry_url(state_dir: Path) -> str:
    """The URL that lets a browser in once (the token is traded for a cookie and dropped from the address)."""
    from agent.gallery.security import read_token

    info = running_gallery(state_dir)
    token = read_token(state_dir)
    if info is None or token is None:
        raise GalleryNotRunningError(
            f"no gallery is running for the state dir {state_dir}",
            hint="set 'gallery: {enabled: true}' in the config and (re)start the agent, or run 'thumbdrop gallery'",
        )
    return f"http://127.0.0.1:{info['port']}/?token={token}"


def open_in_browser(url: str) -> None:
    import webbrowser

    if not webbrowser.open(url):
        raise ThumbdropError("no web browser could be started", hint="set $BROWSER, or use 'thumbdrop open --print'")
