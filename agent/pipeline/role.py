"""One lifecycle for every role the agent runs (uploader, worker, puller, cleaner, poller, ...).

The agent drives them all the same way: ``start()``, then ``pause()``/``resume()`` as the user asks, then
``stop()`` for every role (it returns at once: each role finishes the item in hand and takes no new one),
then ``join(deadline)`` for every role. ``RoleThreads`` is the shared part most roles build on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Role(Protocol):
    """What the agent needs of a role."""

    name: str

    def start(self) -> None:
        """Start the role's threads; returns at once."""

    def pause(self) -> None:
        """Take no new work until ``resume``; work in hand finishes."""

    def resume(self) -> None:
        """Take work again, at once (no wait for a poll interval)."""

    def stop(self) -> None:
        """Ask the role to stop; returns at once. Work in hand drains; nothing new starts."""

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the role's threads to end; True when all have."""


class RoleThreads:
    """A stop event, a pause event and the role's named threads, joined against one deadline.

    A role subclasses it (or holds one); its waits that a resume, a stop or the backend's return should cut short
    wait on ``_wake``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop_event = threading.Event()
        self.paused = threading.Event()
        self._wake = threading.Event()  # set by wake() (and so by resume() and stop()): ends a wait at once
        self._threads: list[threading.Thread] = []

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def spawn(self, target: Callable[[], object], suffix: str = "") -> threading.Thread:
        """Start a named daemon thread of this role (daemon: a wedged library call cannot keep the process
        alive after the deadline; ``join`` still waits for it up to then)."""
        thread = threading.Thread(target=target, name=f"{self.name}-{suffix}" if suffix else self.name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def pause(self) -> None:
        self.paused.set()

    def resume(self) -> None:
        self.paused.clear()
        self.wake()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake()

    def wake(self) -> None:
        """Cut a wait on ``_wake`` short (a backoff, a poll interval)."""
        self._wake.set()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self._threads if t.is_alive()]
        self._threads = alive
        return not alive
