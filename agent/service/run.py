"""Run the agent in the foreground until SIGTERM/SIGINT, then drain and exit.

SIGHUP reloads the config (an invalid one is reported and the agent keeps
running as it was). Under systemd (``Type=notify``) the sd_notify messages
say when the agent is ready, what it is doing, that it is alive, and when it
reloads or stops; elsewhere they are no-ops.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from agent.config.loader import DEFAULTS_ORIGIN, load_config
from agent.config.model import Config
from agent.errors import EXIT_BACKEND, EXIT_OK
from agent.service.sdnotify import Heartbeat, Notifier
from agent.service.supervisor import Supervisor

log = logging.getLogger(__name__)
SERVICE_TICK = 4.0  # seconds; Supervisor.alive() wants a turn within 10


def serve(cfg: Config, *, roles: list[str] | None = None, reload: Callable[[], Config] | None = None) -> int:
    """``reload``: how to read the config again on SIGHUP (the CLI passes its own lookup); default: cfg.origin."""
    stop = threading.Event()
    reload_requested = threading.Event()
    # The service loop sleeps on this: signals, and an agent that stops itself, wake it; else it turns every
    # SERVICE_TICK (the systemd watchdog's "alive" and the embedded backend's health), never faster.
    wake = threading.Event()
    notifier = Notifier.from_env()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            reload_requested.set()
            wake.set()
            return
        log.info("received %s: draining and stopping", signal.Signals(signum).name)
        stop.set()
        wake.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    # A missing watch folder is named once by the uploader itself (with the right advice for an unplugged drive).
    supervisor = Supervisor(cfg, roles=roles, load=reload or _reload_from(cfg), wake=wake.set)
    heartbeat = Heartbeat(notifier, status_text=supervisor.status_line, alive=supervisor.alive)
    try:
        supervisor.start()
        heartbeat.start()
        ready_sent = False
        while True:
            # Quick turns only until READY=1 is sent (the agent's ready event has no hook here).
            wake.wait(SERVICE_TICK if ready_sent else 0.5)
            wake.clear()
            if stop.is_set():
                break
            supervisor.tick()
            if reload_requested.is_set():
                reload_requested.clear()
                log.info("received SIGHUP: reloading the config")
                notifier.reloading()
                supervisor.reload()
                ready_sent = False  # READY=1 again once the (new or kept) agent runs
            if not ready_sent and supervisor.ready():
                notifier.ready(supervisor.status_line())
                ready_sent = True
            if supervisor.stopped_itself():  # a fatal error inside the agent, or a stop through the control socket
                break
        notifier.stopping(f"error: {supervisor.fatal}" if supervisor.fatal else "draining and stopping")
        supervisor.stop()
        return EXIT_BACKEND if supervisor.fatal else EXIT_OK
    finally:
        heartbeat.stop()
        heartbeat.join()
        supervisor.close()
        notifier.close()
        for s, h in previous.items():
            signal.signal(s, h)


def _reload_from(cfg: Config) -> Callable[[], Config]:
    path = None if cfg.origin == DEFAULTS_ORIGIN else Path(cfg.origin)
    return lambda: load_config(path)
