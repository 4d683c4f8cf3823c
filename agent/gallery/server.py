"""The gallery: a loopback HTTP server for the thumbnails and a live view of the agent.

Standard library only (``http.server``): the page is a handful of JSON endpoints, file responses and one
Server-Sent Events stream for a single local user, so a web framework would add a dependency (and its
updates) to every install for nothing the guards below need. Everything the page does to the agent goes
through the control socket (``ControlClient``), exactly as the CLI and the tray; with no agent the page
still shows the local folders and says so.

Every request passes, in order: the Host check (DNS rebinding), the session cookie (got once by trading the
token from ``thumbdrop open``), and for state changes POST + same origin + the session's CSRF token.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections import deque
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from agent.config.model import Config
from agent.errors import ThumbdropError
from agent.gallery.index import Index
from agent.gallery.security import (
    COOKIE,
    CSRF_HEADER,
    SECURITY_HEADERS,
    Guard,
    load_token,
    media_type,
    remove_runtime,
    write_runtime,
)
from agent.imaging.spec import FORMAT_EXTENSIONS
from agent.service.control_client import AgentNotRunningError, ControlClient, ControlCommandError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PAGE_LIMIT = 500
MAX_BODY = 64 * 1024
POLL_WAIT = 3.0  # seconds of one status long poll on the control socket (also how long stop() may wait for it)
RECONNECT = 2.0  # seconds between attempts to reach an agent that is not running
QUEUES_EVERY = 10.0  # seconds between queue depth reads (each is a few SQS calls), while a page is open
QUEUES_RETRY = 2.0  # sooner while the queues are not there yet (the agent is still setting up)
KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream
STATIC = ("app.js", "app.css")
FILE_CHUNK = 256 * 1024


# --- the live feed ------------------------------------------------------------------------------------


class Hub:
    """The latest status and a short history of events; SSE streams wait on it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=200)
        self._seq = 0
        self.status: dict[str, Any] = offline_status("connecting to the agent…")
        self.closed = False
        self.listeners = 0  # open pages: queue depths are read only while someone looks

    def listen(self, delta: int) -> None:
        with self._cond:
            self.listeners += delta
            self._cond.notify_all()

    def publish(self, event: str, data: dict[str, Any]) -> None:
        with self._cond:
            if event == "status":
                self.status = data
            self._seq += 1
            self._events.append((self._seq, event, data))
            self._cond.notify_all()

    def seq(self) -> int:
        with self._cond:
            return self._seq

    def wait(self, after: int, timeout: float) -> list[tuple[int, str, dict[str, Any]]]:
        with self._cond:
            self._cond.wait_for(lambda: self.closed or self._seq > after, timeout)
            return [e for e in self._events if e[0] > after]

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def offline_status(line: str) -> dict[str, Any]:
    return {"agent": False, "state": "offline", "line": line, "counts": {}, "active": {}, "failures": [], "queues": {}}


def page_status(snapshot: dict[str, Any], queues: dict[str, Any]) -> dict[str, Any]:
    """What the status bar shows, in the tray's words; only fields meant for the user (no config, no endpoints)."""
    from agent.tray.menu import TrayView, counts_text, icon_state, status_line

    view = TrayView(snapshot=snapshot, phase="attached")
    state = icon_state(view)
    return {
        "agent": True,
        "state": {"stopped": "offline", "starting": "working"}.get(state, state),
        "line": status_line(view),
        "summary": counts_text(snapshot),
        "counts": snapshot.get("counts") or {},
        "active": snapshot.get("active") or {},
        "pending_local": snapshot.get("pending_local") or 0,
        "failures": [
            {k: f.get(k) for k in ("name", "reason", "role", "at")} for f in snapshot.get("failures") or [] if isinstance(f, dict)
        ],
        "queues": queues,
        "version": snapshot.get("version"),
    }


class AgentLink:
    """One named thread: long-polls the agent's status over the control socket and feeds the hub."""

    def __init__(self, client: ControlClient, hub: Hub, index: Index) -> None:
        self.client = client
        self.hub = hub
        self.index = index
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gallery-agent-link", daemon=True)
        self._queues: dict[str, Any] = {}
        self._queues_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        version: int | None = None
        pulled: int | None = None
        while not self.stop_event.is_set():
            try:
                args: dict[str, Any] = {} if version is None else {"after": version, "wait": POLL_WAIT}
                snap = self.client.call("status", timeout=POLL_WAIT + 10, **args)
            except AgentNotRunningError:
                version = pulled = None
                self.hub.publish("status", offline_status("No agent running: showing the local folders"))
                self.stop_event.wait(RECONNECT)
                continue
            except ThumbdropError as exc:
                version = None
                self.hub.publish("status", offline_status(f"The agent did not answer: {exc}"))
                self.stop_event.wait(RECONNECT)
                continue
            if not isinstance(snap, dict):
                self.stop_event.wait(RECONNECT)
                continue
            if pulled is not None and int((snap.get("counts") or {}).get("pulled") or 0) < pulled:
                pulled = None  # another agent (a reload): its counters start again from 0
            new_version = snap.get("version") if isinstance(snap.get("version"), int) else None
            if new_version is None:  # an agent without the long poll: poll once a second
                self.stop_event.wait(1.0)
            version = new_version
            now_pulled = int((snap.get("counts") or {}).get("pulled") or 0)
            now_recent = [str(p) for p in snap.get("recent_thumbnails") or []]
            if pulled is not None and now_pulled > pulled:
                self._announce(now_pulled - pulled, now_recent)
            pulled = now_pulled
            self._refresh_queues()
            self.hub.publish("status", page_status(snap, self._queues))

    def _announce(self, delta: int, recent: list[str]) -> None:
        """New thumbnails: each to the page as an item; a 'refresh' when more came than the status lists."""
        fresh = recent[-delta:] if delta <= len(recent) else recent
        for path in fresh:
            item = self.index.item_for(Path(path))
            if item is not None:
                self.hub.publish("thumbnail", item.as_dict())
        if delta > len(recent):
            self.index.invalidate()
            self.hub.publish("refresh", {})

    def _refresh_queues(self) -> None:
        if self.hub.listeners == 0:
            self._queues_at = 0.0  # the next page to open gets them at once
            return
        complete = bool(self._queues) and all(isinstance(q, dict) for q in self._queues.values())
        if time.monotonic() - self._queues_at < (QUEUES_EVERY if complete else QUEUES_RETRY):
            return
        self._queues_at = time.monotonic()
        try:
            found = self.client.call("queues", timeout=15.0)
            self._queues = found if isinstance(found, dict) else {}
        except ThumbdropError as exc:
            self._queues = {"error": str(exc)}


# --- HTTP -----------------------------------------------------------------------------------------------------


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
        import sys

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


def _static(name: str) -> bytes:
    return resources.files("agent.gallery").joinpath("static", name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    server: GalleryHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "thumbdrop-gallery"
    sys_version = ""
    timeout = 30  # an idle keep-alive connection is closed after this
    # Headers and body go out as separate writes: with Nagle's algorithm each keep-alive answer would wait ~40 ms
    # for the client's delayed ACK.
    disable_nagle_algorithm = True

    # --- plumbing ---------------------------------------------------------------------------------

    @property
    def app(self) -> Gallery:
        return self.server.app

    @property
    def guard(self) -> Guard:
        assert self.app.guard is not None
        return self.app.guard

    def version_string(self) -> str:
        return self.server_version  # no Python version on the wire

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("gallery %s: " + format, self.address_string(), *args)

    def _send(
        self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8", headers: dict[str, str] | None = None
    ) -> None:
        self._head(status, ctype, len(body), headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _head(self, status: int, ctype: str, length: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _session(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None
        morsel = jar.get(f"{COOKIE}_{self.guard.port}")
        value = morsel.value if morsel is not None else None
        return value if self.guard.session_ok(value) else None

    def _checked(self) -> tuple[str, dict[str, list[str]], str | None] | None:
        """Host check and session: (path, query, session) or None when already answered."""
        if not self.guard.host_ok(self.headers.get("Host")):
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"wrong Host: open the gallery with 'thumbdrop open'\n")
            return None
        parts = urlsplit(self.path)
        return unquote(parts.path), parse_qs(parts.query), self._session()

    # --- GET ---------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        checked = self._checked()
        if checked is None:
            return
        path, query, session = checked
        if path == "/" and "token" in query:
            self._enter(query["token"][0])
            return
        if session is None:
            self._send(
                HTTPStatus.FORBIDDEN,
                b"This page is private. Open it with 'thumbdrop open' (or the tray's 'Open gallery').\n",
            )
            return
        if path == "/":
            self._page(session)
        elif path.startswith("/static/") and path[8:] in STATIC:
            name = path[8:]
            ctype = "text/javascript; charset=utf-8" if name.endswith(".js") else "text/css; charset=utf-8"
            self._send(HTTPStatus.OK, _static(name), ctype)
        elif path == "/api/list":
            self._list(query)
        elif path == "/api/status":
            self._json(HTTPStatus.OK, self.app.hub.status)
        elif path == "/api/events":
            self._events()
        elif path.startswith("/file/"):
            self._file(path[6:])
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def _enter(self, offered: str) -> None:
        """Trade the token for a session cookie and send the browser to a clean URL (no token in history)."""
        if not self.guard.token_ok(offered):
            log.warning("gallery: refused an entry with a wrong token")
            self._send(HTTPStatus.FORBIDDEN, b"wrong or old token: open the gallery again with 'thumbdrop open'\n")
            return
        cookie = f"{COOKIE}_{self.guard.port}={self.guard.new_session()}; HttpOnly; SameSite=Strict; Path=/"
        self._send(HTTPStatus.SEE_OTHER, b"", headers={"Location": "/", "Set-Cookie": cookie})

    def _page(self, session: str) -> None:
        html = _static("index.html").decode("utf-8").replace("{{csrf}}", self.guard.csrf_for(session))
        self._send(HTTPStatus.OK, html.encode("utf-8"), "text/html; charset=utf-8")

    def _list(self, query: dict[str, list[str]]) -> None:
        try:
            offset = max(0, int(query.get("offset", ["0"])[0]))
            limit = min(PAGE_LIMIT, max(1, int(query.get("limit", ["100"])[0])))
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "offset and limit must be whole numbers")
            return
        folder = query.get("dir", [""])[0]
        if ".." in folder.split("/") or "\x00" in folder:
            self._error(HTTPStatus.BAD_REQUEST, f"bad folder {folder!r}")
            return
        self._json(HTTPStatus.OK, self.app.index.listing(folder, query.get("q", [""])[0].strip(), offset, limit))

    def _file(self, rest: str) -> None:
        area, rel = "", ""
        head, _, tail = rest.partition("/")
        if head == "t" and tail.split("/", 1)[0].isdigit() and len(self.app.index.sizes) > 1:
            size, _, rel = tail.partition("/")
            area = f"t/{size}"
        elif head == "t":
            area, rel = "t", tail
        elif head == "w":
            n, _, rel = tail.partition("/")
            area = f"w/{n}"
        path = self.app.index.file_path(area, rel) if area else None
        ctype = media_type(path) if path is not None else None
        if path is None or ctype is None:
            self._error(HTTPStatus.NOT_FOUND, "no such picture (only files under the thumbnails or a watch folder are shown)")
            return
        try:
            f = path.open("rb")
        except OSError as exc:
            self._error(HTTPStatus.NOT_FOUND, f"cannot read {path.name}: {exc.strerror or exc}")
            return
        with f:  # streamed: an original in a watch folder may be tens of megabytes
            self._head(HTTPStatus.OK, ctype, os.fstat(f.fileno()).st_size, {"Cache-Control": "private, max-age=60"})
            if self.command != "HEAD":
                shutil.copyfileobj(f, self.wfile, FILE_CHUNK)

    def _events(self) -> None:
        """Server-Sent Events: 'status' now and on every change, 'thumbnail' per new one, 'refresh'."""
        hub = self.app.hub
        self.close_connection = True
        if self.command == "HEAD":
            self._head(HTTPStatus.OK, "text/event-stream; charset=utf-8", 0)
            return
        self.send_response(HTTPStatus.OK)
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Connection", "close")
        self.end_headers()
        seq = hub.seq()
        hub.listen(+1)
        try:
            self._emit("status", hub.status, "retry: 2000\n")
            while not self.app.stopping.is_set() and not hub.closed:
                events = hub.wait(seq, KEEPALIVE)
                if not events:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    continue
                for n, event, data in events:
                    seq = n
                    self._emit(event, data)
        except OSError:
            return  # the page went away
        finally:
            hub.listen(-1)

    def _emit(self, event: str, data: dict[str, Any], prefix: str = "") -> None:
        self.wfile.write(f"{prefix}event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    # --- POST ---------------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        checked = self._checked()
        if checked is None:
            return
        path, _query, session = checked
        if session is None:
            self._error(HTTPStatus.FORBIDDEN, "no session: open the gallery with 'thumbdrop open'")
            return
        if not self.guard.origin_ok(self.headers.get("Origin")) or not self.guard.csrf_ok(session, self.headers.get(CSRF_HEADER)):
            log.warning("gallery: refused a %s without this page's CSRF token", path)
            self._error(HTTPStatus.FORBIDDEN, "refused: the request did not come from the gallery page (CSRF check)")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            return
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return
        actions = {
            "/api/pause": lambda: self.app.command("pause"),
            "/api/resume": lambda: self.app.command("resume"),
            "/api/sync": lambda: self.app.command("sync-now"),
            "/api/retry": lambda: self.app.command("retry", name=body.get("name"), role=body.get("role")),
            "/api/retry-all": lambda: {
                "redrive": self.app.command("dlq-redrive"),
                "sync": self.app.command("sync-now"),
            },
        }
        action = actions.get(path)
        if action is None:
            self._error(HTTPStatus.NOT_FOUND, f"no such action: {path}")
            return
        try:
            result = action()
        except AgentNotRunningError as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
            return
        except ControlCommandError as exc:
            self._error(HTTPStatus.CONFLICT, exc.message)
            return
        except ThumbdropError as exc:
            self._error(HTTPStatus.BAD_GATEWAY, str(exc))
            return
        self._json(HTTPStatus.OK, {"ok": True, "result": result})

    def _refuse_method(self) -> None:
        self.close_connection = True
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and POST")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method  # noqa: N815 - http.server's naming
