"""The gallery's HTTP requests: the guards every request passes, the routes, file responses, the SSE stream.

Every request passes, in order: the Host check (DNS rebinding), the session cookie (got once by trading the
token from ``thumbdrop open``), and for state changes POST + same origin + the session's CSRF token.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from agent.errors import ThumbdropError
from agent.gallery.security import COOKIE, CSRF_HEADER, SECURITY_HEADERS, Guard, media_type
from agent.service.control_client import AgentNotRunningError, ControlCommandError

if TYPE_CHECKING:
    from agent.gallery.server import Gallery, GalleryHTTPServer

log = logging.getLogger(__name__)

PAGE_LIMIT = 500
MAX_BODY = 64 * 1024
KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream
STATIC = ("app.js", "app.css")
FILE_CHUNK = 256 * 1024


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
