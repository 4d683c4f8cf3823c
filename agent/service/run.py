"""Run the agent in the foreground until SIGTERM/SIGINT, then drain and exit."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from agent.config.model import Config
from agent.errors import EXIT_BACKEND, EXIT_OK
from agent.service.agent import Agent
from agent.service.runtime import open_backend, state_dir

log = logging.getLogger(__name__)


def serve(cfg: Config, *, roles: list[str] | None = None) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: draining and stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with open_backend(cfg) as backend:
            agent = Agent(cfg, backend, state_dir(cfg), roles=roles)
            agent.start()
            while not stop.wait(0.5):
                if agent.stop_event.is_set():  # a fatal error inside the agent
                    break
            agent.stop()
            return EXIT_BACKEND if agent.status.fatal else EXIT_OK
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
