"""The sd_notify protocol, without a dependency: datagrams to ``$NOTIFY_SOCKET``.

systemd (``Type=notify``) learns from these messages when the agent is ready,
what it is doing (``STATUS=``), that it is alive (``WATCHDOG=1``), and when it
reloads or stops. A socket path starting with ``@`` is in the abstract
namespace. Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so
callers never need to ask whether systemd is there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; a no-op when not started by systemd."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the interval systemd allows, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines in one datagram (``send(READY=1, STATUS="...")``); False if it could not."""
        if self.address is None:
            return False
        text = "\n".join(f"{k}={_one_line(str(v))}" for k, v in fields.items())
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(text.encode("utf-8"), addr)
                return True
            except OSError as exc:
                # Losing a notification must never stop the agent; say so once, at debug after that.
                (log.debug if self._warned else log.warning)("could not notify systemd at %s: %s", self.address, exc)
                self._warned = True
                return False

    def ready(self, status: str = "") -> None:
        self.send(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (Type=notify-reload, 253+) match this message to its reload request.
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000, STATUS="reloading the config")

    def stopping(self, status: str = "draining and stopping") -> None:
        self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.close()
                self._sock = None


def watchdog_usec(env: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` when the watchdog is meant for this process (``WATCHDOG_PID`` unset or ours)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment inside the datagram.
    return text.replace("\n", " ")


class Heartbeat:
    """A named thread: ``STATUS=`` every ``status_every`` seconds and ``WATCHDOG=1`` at half the watchdog interval.

    The watchdog is only fed while ``alive()`` says the service loop is healthy, so a hung
    agent is restarted by systemd instead of being kept alive by this thread.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        status_text: Callable[[], str],
        alive: Callable[[], bool],
        status_every: float = 5.0,
    ) -> None:
        self.notifier = notifier
        self.status_text = status_text
        self.alive = alive
        self.status_every = status_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sd-notify", daemon=True)

    def start(self) -> None:
        if self.notifier.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        interval = self.notifier.watchdog_interval
        tick = min(self.status_every, interval) if interval else self.status_every
        next_status = 0.0
        last_text, last_sent = "", 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if interval and self.alive():
                self.notifier.watchdog()
            if now >= next_status:
                text = self.status_text()
                # Repeat an unchanged status only now and then: each one costs systemd a little work.
                if text != last_text or now - last_sent >= 6 * self.status_every:
                    self.notifier.status(text)
                    last_text, last_sent = text, now
                next_status = now + self.status_every
            self._stop.wait(tick)
