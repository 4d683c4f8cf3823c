"""The gallery: a loopback HTTP server for the thumbnails and a live view of the agent.

Standard library only (``http.server``): the page is a handful of JSON endpoints, file responses and one
Server-Sent Events stream for a single local user, so a web framework would add a dependency (and its
updates) to every install for nothing the guards in ``handler`` need. Everything the page does to the agent goes
through the control socket (``ControlClient``), exactly as the CLI and the tray; with no agent the page
still shows the local folders and says so.

This module binds, serves and stops; ``handler`` answers the requests (and holds the guards every request
passes), ``live`` follows the agent for the page.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.config.model import Config
from agent.gallery.handler import Handler
from agent.gallery.index import Index
from agent.gallery.live import AgentLink, Hub
from agent.gallery.security import Guard, load_token, remove_runtime, write_runtime
from agent.imaging.spec import FORMAT_EXTENSIONS
from agent.service.control_client import ControlClient

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class GalleryHTTPServer(ThreadingHTTPServer):
    """Named request threads, tracked so that stop() can end open streams and join them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], app: Gallery) -> None:
        self.app = app
        self._serial = 0
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.open: set[socket.socket] = set()
        super().__init__(addr, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._serial += 1
            self.threads = [t for t in self.threads if t.is_alive()]
            t = threading.Thread(
                target=self.process_request_thread,
                args=(request, client_address),
                name=f"gallery-http-{self._serial}",
                daemon=True,
            )
            self.threads.append(t)
            self.open.add(request)
        t.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A page closed mid-answer is normal (navigation, a closed tab); anything else is logged in full."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("gallery: a client went away: %s", sys.exc_info()[1])
            return
        log.exception("gallery: request from %s failed", client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._lock:
            conns = list(self.open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Gallery:
    """The gallery server for one config; ``start`` binds and serves on named threads, ``stop`` ends them."""

    def __init__(self, cfg: Config, state_dir: Path, *, port: int | None = None, standalone: bool = False) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.wanted_port = cfg.gallery.port if port is None else port
        self.standalone = standalone
        self.index = Index(
            Path(cfg.local.thumbnails_dir).expanduser(),
            [Path(f).expanduser() for f in cfg.watch.folders],
            list(cfg.thumbnails.sizes),
            FORMAT_EXTENSIONS[cfg.thumbnails.format],
        )
        self.hub = Hub()
        self.client = ControlClient(state_dir)
        self.link = AgentLink(self.client, self.hub, self.index)
        self.guard: Guard | None = None
        self.httpd: GalleryHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._warm: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        assert self.httpd is not None
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def start(self) -> None:
        token = load_token(self.state_dir)
        try:
            self.httpd = GalleryHTTPServer((HOST, self.wanted_port), self)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self.wanted_port == 0:
                raise
            # Another program has the port: take a free one; 'thumbdrop open' finds it in the state dir.
            self.httpd = GalleryHTTPServer((HOST, 0), self)
            log.warning("gallery: port %d is taken; serving on %d instead", self.wanted_port, self.port)
        self.guard = Guard(token, self.port)
        write_runtime(self.state_dir, {"pid": os.getpid(), "port": self.port, "url": self.url, "standalone": self.standalone})
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="gallery-http", daemon=True
        )
        self._thread.start()
        # The first look at a big folder reads every file's date: do it now rather than in the first page's request.
        self._warm = threading.Thread(target=self.index.items, name="gallery-index", daemon=True)
        self._warm.start()
        self.link.start()
        log.info("gallery at %s ('thumbdrop open' opens it)", self.url)

    def stop(self) -> None:
        self.stopping.set()
        self.link.stop()
        self.hub.close()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.close_connections()
            self.httpd.server_close()
        remove_runtime(self.state_dir, os.getpid())

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        self.link.join(max(0.1, deadline - time.monotonic()))
        if self._warm is not None:
            self._warm.join(max(0.1, deadline - time.monotonic()))
        if self.httpd is not None:
            for t in list(self.httpd.threads):
                t.join(max(0.1, deadline - time.monotonic()))

    # --- what the handler asks -----------------------------------------------------------------

    def command(self, cmd: str, **args: Any) -> Any:
        return self.client.call(cmd, timeout=120.0, **args)
