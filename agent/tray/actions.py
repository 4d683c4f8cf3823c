"""Where menu actions run: one at a time on the named thread ``tray-actions``, never on the GUI thread (a slow
cleanup must not freeze the menu). One failed action is told to the user and does not end the thread."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from agent.errors import ThumbdropError
from agent.service.control_client import AgentNotRunningError
from agent.tray.notify import Notifier

log = logging.getLogger(__name__)


class ActionRunner:
    """Runs actions until ``stop_event`` is set; ``on_no_agent`` when an action finds no agent to ask."""

    def __init__(self, notifier: Notifier, stop_event: threading.Event, on_no_agent: Callable[[], None]) -> None:
        self.notifier = notifier
        self.stop_event = stop_event
        self.on_no_agent = on_no_agent
        self._queue: queue.Queue[tuple[str, Callable[[], None]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self._loop, name="tray-actions", daemon=True)
        self._thread.start()
        return self._thread

    def wake(self) -> None:
        """End the thread (after the actions already queued); the owner sets ``stop_event`` and joins it."""
        self._queue.put(None)

    def submit(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the action thread (inline before start(): what unit tests use)."""
        if self._thread is None:
            self.run(name, fn)
        elif not self.stop_event.is_set():
            self._queue.put((name, fn))

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self.run(*job)

    def run(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except AgentNotRunningError:
            self.notifier.now("thumbdrop", f"{name}: no agent is running")
            self.on_no_agent()
        except (ThumbdropError, OSError) as exc:  # one failed action must not end the action thread
            log.warning("%s failed: %s", name, exc)
            self.notifier.now(f"thumbdrop: {name} failed", str(exc))
