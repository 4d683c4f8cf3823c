"""What outlives one Agent in ``thumbdrop run``: the backend, the metrics endpoint, the log file.

A config reload (SIGHUP) stops the running Agent and starts a new one with the
new config on the same backend when the backend section is unchanged (the
embedded server keeps its buckets and queues), else on a reopened backend. A
new config that cannot be loaded changes nothing: the old agent keeps running.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from agent.cloud.clients import Backend
from agent.cloud.local_backend import LocalBackend, attach_or_start
from agent.config.model import Config
from agent.errors import ConfigError, ThumbdropError
from agent.ops.backend import backend_for
from agent.service.agent import Agent
from agent.service.logs import use_config_log_file
from agent.service.metrics import Metrics
from agent.service.runtime import pool_size, state_dir

log = logging.getLogger(__name__)
LOCAL_RESTART_INTERVAL = 10.0  # seconds between two restarts of a dead embedded backend


class Supervisor:
    """Owns the running Agent; ``reload`` swaps it for one built from the new config."""

    def __init__(
        self, cfg: Config, *, roles: list[str] | None, load: Callable[[], Config], wake: Callable[[], None] = lambda: None
    ) -> None:
        self.cfg = cfg
        self.wake = wake  # called when the running agent stops itself: the service loop looks at once
        self.roles = roles
        self.load = load
        self.agent: Agent | None = None
        self.backend: Backend | None = None
        self._local: LocalBackend | None = None
        self._metrics: Metrics | None = None
        self._metrics_at: tuple[str, int] | None = None
        self._last_tick = time.monotonic()
        self._reloading = threading.Event()
        self._local_restarted = 0.0

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._open_backend(self.cfg)
        self._apply_side_settings(self.cfg)
        self.agent = self._start_agent(self.cfg, previous=None)

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()

    def close(self) -> None:
        """After stop(): the metrics endpoint and the embedded backend this process owns."""
        self._stop_metrics()
        if self._local is not None:
            self._local.stop()
            self._local = None

    def reload(self) -> bool:
        """Load the config again and restart the agent with it; False (old config kept) when it is invalid."""
        self._reloading.set()
        try:
            return self._reload()
        finally:
            self._reloading.clear()
            self._last_tick = time.monotonic()

    def _reload(self) -> bool:
        assert self.agent is not None
        try:
            new = self.load()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config reload: %s: %s", exc.source, problem)
            log.error("config reload failed: still running with the previous config")
            return False
        except ThumbdropError as exc:
            log.error("config reload failed (%s): still running with the previous config", exc)
            return False
        old_cfg, old_agent = self.cfg, self.agent
        paused = old_agent.paused.is_set()
        log.info("config reload: restarting the agent with %s", new.origin)
        old_agent.stop()
        try:
            if _backend_changed(old_cfg, new):
                log.info("config reload: the backend section changed; reopening the backend")
                self._open_backend(new)
            self._apply_side_settings(new)
            self.agent = self._start_agent(new, previous=old_agent)
            self.cfg = new
        except ThumbdropError as exc:
            log.error("config reload: the new config could not start (%s); going back to the previous one", exc)
            self._open_backend(old_cfg)
            self._apply_side_settings(old_cfg)
            self.agent = self._start_agent(old_cfg, previous=old_agent)
            ok = False
        else:
            ok = True
        if paused:
            self.agent.pause()  # a pause asked for before the reload still holds
        return ok

    # --- what the service loop asks ------------------------------------------------------

    def tick(self) -> None:
        self._last_tick = time.monotonic()
        local = self._local
        if local is None or not local.owned or local.process is None or local.process.poll() is None:
            return
        if time.monotonic() - self._local_restarted < LOCAL_RESTART_INTERVAL:
            return  # it died again right away: try again in a while, not in a loop
        self._reloading.set()  # bounded like a reload: keeps the systemd watchdog fed meanwhile
        try:
            self._restart_local(local.process.returncode)
        finally:
            self._reloading.clear()
            self._last_tick = time.monotonic()

    def _restart_local(self, code: int | None) -> None:
        """The embedded server is this process's child: if it dies, nothing else will bring it back."""
        self._local_restarted = time.monotonic()
        log.warning(
            "the embedded backend exited (code %s); starting a new one: it starts empty, setup and a rescan put "
            "back what the local folders hold",
            code,
        )
        old_agent = self.agent
        paused = old_agent is not None and old_agent.paused.is_set()
        if old_agent is not None:
            old_agent.stop()
        if self._local is not None:
            self._local.stop()
            self._local = None
        try:
            self._open_backend(self.cfg)
        except ThumbdropError as exc:
            log.error("could not start the embedded backend again: %s", exc)
            if old_agent is not None:
                old_agent.status.fatal = f"the embedded backend died and could not be started again: {exc}"
            return
        self.agent = self._start_agent(self.cfg, previous=old_agent)
        if paused:
            self.agent.pause()

    def alive(self) -> bool:
        """For the systemd watchdog: the service loop turns (or is busy reloading, which is bounded)."""
        return self._reloading.is_set() or time.monotonic() - self._last_tick < 10.0

    def ready(self) -> bool:
        """The roles run, or the agent waits for an offline backend (a state it may keep for hours)."""
        a = self.agent
        return a is not None and (a.ready.is_set() or a.status.offline_since is not None)

    def stopped_itself(self) -> bool:
        return self.agent is not None and self.agent.stop_event.is_set()

    @property
    def fatal(self) -> str | None:
        return self.agent.status.fatal if self.agent is not None else None

    def status_line(self) -> str:
        """One line for systemd's STATUS= (``systemctl status`` shows it)."""
        if self.agent is None:
            return "starting"
        s = self.agent.status.snapshot()
        c = s["counts"]
        line = (
            f"{s['state']}: {c['uploaded']} uploaded, {c['thumbnailed']} thumbnailed, {c['pulled']} pulled, "
            f"{c['failed']} failed; {s['pending_local']} pending"
        )
        if s.get("fatal"):
            return f"error: {s['fatal']}"
        if s.get("offline_since"):
            return f"{line}; OFFLINE: {s['offline_reason']}"
        return line

    # --- parts ---------------------------------------------------------------------------

    def _open_backend(self, cfg: Config) -> None:
        if cfg.backend.endpoint_url == "local":
            # The embedded server is kept across reloads: its buckets and queues live only in it.
            if self._local is None:
                self._local = attach_or_start(state_dir(cfg))
            self.backend = backend_for(cfg, self._local.endpoint_url)
            return
        if self._local is not None:
            self._local.stop()
            self._local = None
        self.backend = backend_for(cfg)

    def _start_agent(self, cfg: Config, *, previous: Agent | None) -> Agent:
        assert self.backend is not None
        agent = Agent(cfg, self.backend, state_dir(cfg), roles=self.roles)
        agent.on_stop = self.wake
        if previous is not None:
            _carry_counts(previous, agent)
        if self._metrics is not None:
            self._metrics.attach(agent.status, cfg, self.backend)
        agent.start()
        return agent

    def _apply_side_settings(self, cfg: Config) -> None:
        """The log file and the metrics endpoint: both may change with a reload."""
        use_config_log_file(cfg.local.log_file, state_dir(cfg))
        wanted = (cfg.metrics.host, cfg.metrics.port) if cfg.metrics.port else None
        if wanted == self._metrics_at:
            return
        self._stop_metrics()
        if wanted is None:
            return
        try:
            metrics = Metrics(host=cfg.metrics.host, port=cfg.metrics.port, queue_poll_seconds=cfg.metrics.queue_poll_seconds)
            metrics.start()
        except ThumbdropError as exc:
            # Metrics are for watching the agent; their absence must not stop the work.
            log.error("%s (%s); running without metrics", exc.message, exc.hint)
            return
        self._metrics, self._metrics_at = metrics, wanted

    def _stop_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.stop()
        self._metrics, self._metrics_at = None, None


def _backend_changed(old: Config, new: Config) -> bool:
    return dataclasses.asdict(old.backend) != dataclasses.asdict(new.backend) or pool_size(old) != pool_size(new)


def _carry_counts(old: Agent, new: Agent) -> None:
    """Counts go on across a reload: systemd's STATUS= and the metrics' counters never step back."""
    before = old.status.snapshot()
    s = new.status
    s.counts.update(before["counts"])
    s.bytes.update(before["bytes"])
    s.last_success.update(before["last_success"])
    s.adopt(old.status)
    s.recent_thumbnails.extend(before["recent_thumbnails"])
    s.started_at = before["started_at"]
