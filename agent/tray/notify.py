"""Desktop notifications: failures rate-limited and summarised, answers to the user's own actions at once."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
Send = Callable[[str, str], None]
FAILURE_INTERVAL = 30.0
SHOWN_PER_SUMMARY = 3


class Notifier:
    """``now`` for answers to a click; ``failure`` lines are collected and sent at most once per ``min_interval``."""

    def __init__(
        self, send: Send, *, min_interval: float = FAILURE_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._send = send
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._last_failure_at: float | None = None

    def now(self, title: str, message: str) -> None:
        self._deliver(title, message)

    def failure(self, lines: list[str]) -> None:
        with self._lock:
            self._pending.extend(lines)
        self.flush()

    def flush(self) -> None:
        """Send the collected failures if the last failure notification is old enough (called on every poll)."""
        with self._lock:
            if not self._pending:
                return
            now = self._clock()
            if self._last_failure_at is not None and now - self._last_failure_at < self.min_interval:
                return
            lines, self._pending = self._pending, []
            self._last_failure_at = now
        self._deliver(*summarise(lines))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _deliver(self, title: str, message: str) -> None:
        # Logged as well: the tray log is the record when no notification daemon runs (and what tests read).
        log.info("notification: %s: %s", title, message.replace("\n", " | "))
        self._send(title, message)


def summarise(lines: list[str]) -> tuple[str, str]:
    """(title, message) for a batch of failure lines: the first few, then how many more."""
    n = len(lines)
    title = f"thumbdrop: {n} item{'s' if n != 1 else ''} failed"
    shown = lines[:SHOWN_PER_SUMMARY]
    more = n - len(shown)
    message = "\n".join(shown) + (f"\nand {more} more (see 'Failed items' in the menu)" if more else "")
    return title, message


def desktop_sender(fallback: Send | None = None) -> Send:
    """notify-send when installed (works on every freedesktop desktop), else ``fallback`` (pystray's notify)."""
    binary = shutil.which("notify-send")

    def send(title: str, message: str) -> None:
        if binary is None:
            if fallback is not None:
                fallback(title, message)
            return
        try:
            result = subprocess.run(
                [binary, "--app-name=thumbdrop", title, message],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("notify-send failed: %s", exc)
            return
        if result.returncode != 0:
            # No notification daemon (a bare X session): the log line above is all the user gets.
            log.debug("notify-send exited %d: %s", result.returncode, result.stderr.decode(errors="replace").strip())

    return send
