"""Prometheus metrics (``metrics.port``): an HTTP endpoint on loopback for fleets of agents.

Counters and gauges are read from the agent's Status at scrape time, so they
never drift from what ``thumbdrop status`` shows; durations are histograms fed
by ``Status.on_done``; queue depths are polled at most every
``metrics.queue_poll_seconds`` (a scrape never waits on more than that). The
exporter outlives config reloads: ``attach`` points it at the new agent.
Needs the ``metrics`` extra (prometheus_client).
"""

from __future__ import annotations

import logging
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from agent import __version__
from agent.errors import BackendError, ThumbdropError

if TYPE_CHECKING:
    from agent.cloud.clients import Backend
    from agent.config.model import Config
    from agent.state.status import Status

log = logging.getLogger(__name__)
ACTIVITIES = ("upload", "thumbnail", "preview", "pull")
# Thumbnails take tens of milliseconds; a large original over a slow link takes minutes.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress must not hold up the agent's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the signature is the base class's
        log.debug("metrics: " + format, *args)


class Metrics:
    """The metrics registry and its HTTP endpoint."""

    def __init__(self, *, host: str, port: int, queue_poll_seconds: float = 30.0) -> None:
        try:
            from prometheus_client import CollectorRegistry, Histogram
        except ImportError:
            raise BackendError(
                "metrics.port is set but prometheus_client is not installed",
                hint="pip install 'thumbdrop[metrics]', or set metrics.port: 0",
            ) from None
        self.host = host
        self.port = port
        self.queue_poll_seconds = queue_poll_seconds
        self.registry = CollectorRegistry()
        self.durations = Histogram(
            "thumbdrop_duration_seconds",
            "Time one upload, thumbnail or pull took.",
            ["activity"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        for activity in ACTIVITIES:
            self.durations.labels(activity)  # present (at 0) before the first one is done
        self._lock = threading.Lock()
        self._status: Status | None = None
        self._cfg: Config | None = None
        self._backend: Backend | None = None
        self._depths: dict[tuple[str, str], int] = {}
        self._depths_at = 0.0
        self._poll_errors = 0
        self.registry.register(_Collector(self))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        from prometheus_client import make_wsgi_app

        try:
            self._server = make_server(self.host, self.port, make_wsgi_app(self.registry), _Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise BackendError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}",
                hint="choose a free metrics.port, or 0 to turn the endpoint off",
            ) from None
        self.port = self._server.server_port  # port 0 in tests: the one the OS chose
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics-http")
        self._thread.daemon = True
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def attach(self, status: Status, cfg: Config, backend: Backend) -> None:
        """Report this agent's status (after a reload: the new agent's) and queues."""
        status.on_done = self.observe
        with self._lock:
            self._status, self._cfg, self._backend = status, cfg, backend
            self._depths_at = 0.0  # the queues may have changed with the config

    def observe(self, activity: str, seconds: float, _nbytes: int) -> None:
        self.durations.labels(activity).observe(seconds)

    # --- queue depths ---------------------------------------------------------------

    def depths(self) -> dict[tuple[str, str], int]:
        """(queue, state) -> messages; polled at most every queue_poll_seconds, else the last values."""
        with self._lock:
            cfg, backend = self._cfg, self._backend
            stale = time.monotonic() - self._depths_at >= self.queue_poll_seconds
            if not stale or cfg is None or backend is None:
                return dict(self._depths)
            self._depths_at = time.monotonic()  # one poll at a time, even with concurrent scrapes
        try:
            depths = _poll_depths(cfg, backend)
        except ThumbdropError as exc:
            log.debug("metrics: could not read queue depths: %s", exc)
            with self._lock:
                self._poll_errors += 1
                return dict(self._depths)
        with self._lock:
            self._depths = depths
            return dict(depths)


def _poll_depths(cfg: Config, backend: Backend) -> dict[tuple[str, str], int]:
    from agent.ops.queues import queue_depths

    return {(name, kind): n for name, entry in queue_depths(cfg, backend).items() if entry for kind, n in entry.items()}


class _Collector:
    """Builds the Status-backed metric families at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # no fixed description: collect() is called at each scrape, never at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.metrics
        info = GaugeMetricFamily("thumbdrop_info", "thumbdrop version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        with m._lock:
            status = m._status
        if status is None:
            return
        snap = status.snapshot()
        files = CounterMetricFamily("thumbdrop_files", "Files and objects handled, by outcome.", labels=["event"])
        for event, n in snap["counts"].items():
            # counts["failed"] drops when a failed item goes through later; a counter must never step back.
            files.add_metric([event], snap.get("failed_total", n) if event == "failed" else n)
        yield files
        moved = CounterMetricFamily("thumbdrop_bytes", "Bytes moved, by activity.", labels=["activity"])
        last = GaugeMetricFamily(
            "thumbdrop_last_success_timestamp_seconds", "When an activity last succeeded (Unix time).", labels=["activity"]
        )
        for activity in ACTIVITIES:
            moved.add_metric([activity], snap["bytes"].get(activity, 0))
            if activity in snap["last_success"]:
                last.add_metric([activity], snap["last_success"][activity])
        yield moved
        yield last
        active = GaugeMetricFamily("thumbdrop_active", "Work in progress, by activity.", labels=["activity"])
        for activity, n in snap["active"].items():
            active.add_metric([activity], n)
        yield active
        yield GaugeMetricFamily(
            "thumbdrop_pending_local_files", "Local files waiting to be uploaded.", value=snap["pending_local"]
        )
        yield GaugeMetricFamily(
            "thumbdrop_offline", "1 while the backend cannot be reached.", value=1 if snap["offline_since"] else 0
        )
        state = GaugeMetricFamily("thumbdrop_state", "The agent's state (1 for the current one).", labels=["state"])
        state.add_metric([snap["state"]], 1)
        yield state
        depths = GaugeMetricFamily("thumbdrop_queue_messages", "Messages in the queues, by state.", labels=["queue", "state"])
        for (queue, kind), n in sorted(m.depths().items()):
            depths.add_metric([queue, kind], n)
        yield depths
        yield CounterMetricFamily("thumbdrop_queue_poll_errors", "Failed reads of the queue depths.", value=m._poll_errors)
