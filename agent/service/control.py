"""The running agent's local control interface: a Unix socket, JSON lines.

``control.sock`` lives in the state dir (0700) and is itself 0600; a peer of
another user is refused even where the file mode would let it in (root).
Each request is one JSON object on one line, ``{"cmd": "pause", "args": {}}``;
each answer is one line, ``{"ok": true, "result": ...}`` or ``{"ok": false,
"code": "...", "error": "..."}``. The tray and ``thumbdrop status/pause/resume``
talk to the agent only through this interface (see ``control_client``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__
from agent.errors import ThumbdropError, UsageError
from agent.ops.queues import queue_depths
from agent.service.control_client import AgentNotRunningError, ControlClient
from agent.service.control_commands import (
    CommandError,
    Controllable,
    cleanup_now,
    redrive_dead_letters,
    retry_item,
)
from agent.service.control_socket import MAX_LINE, SOCKET_NAME, socket_path, sun_path
from agent.state.status import StatusSnapshot

log = logging.getLogger(__name__)

# ``status`` with ``after``: a long poll, answered once the status changes or after ``wait`` seconds (at most this).
MAX_STATUS_WAIT = 20.0
# accept() waits this long at most before looking at the stop flag again: only a safety net where shutting the
# socket down does not wake it (not Linux).
ACCEPT_SAFETY_SECONDS = 10.0
COMMANDS = (
    "info",
    "status",
    "queues",
    "pause",
    "resume",
    "sync-now",
    "retry",
    "sync",
    "sync-status",
    "sync-cancel",
    "cleanup-now",
    "dlq-redrive",
    "stop",
)


class AgentAlreadyRunningError(UsageError):
    title = "Agent already running"


class ControlServer:
    """Serves the control socket on a named thread; one short-lived named thread per connection."""

    def __init__(self, state_dir: Path, target: Controllable, *, connection_timeout: float = 30.0) -> None:
        self.path = socket_path(state_dir)
        self.target = target
        self.connection_timeout = connection_timeout
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._inode: int | None = None
        self._thread: threading.Thread | None = None
        self._conns: list[threading.Thread] = []
        self._open: set[socket.socket] = set()  # shut down by stop(): an idle client must not hold up the join
        self._conns_lock = threading.Lock()
        self._serial = 0

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve; raise AgentAlreadyRunningError when another agent answers on the socket.

        Any other failure to bind is logged, not raised: the agent runs without a control interface.
        """
        self._take_over_stale_socket()
        tmp = self.path.with_name(f".{SOCKET_NAME}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with sun_path(tmp) as addr:
                sock.bind(addr)
            # Bound under a temporary name and renamed once private: no moment where the socket is group/world-open.
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            self._inode = os.stat(self.path).st_ino
            sock.listen(16)
            # accept() blocks: stop() shuts the socket down, which wakes it (no polling while idle).
            sock.settimeout(ACCEPT_SAFETY_SECONDS)
        except OSError as exc:
            sock.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            # The pipeline does not need it: run on, reachable only through status.json.
            log.warning(
                "no control socket at %s (%s): 'thumbdrop pause/resume' and the tray cannot reach this agent", self.path, exc
            )
            return
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="agent-control", daemon=True)
        self._thread.start()
        log.debug("control interface listening on %s", self.path)

    def _take_over_stale_socket(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        try:
            info = ControlClient(self.path.parent, timeout=2.0).call("info")
        except AgentNotRunningError:
            log.info("removing stale control socket %s (its agent is gone)", self.path)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        except ThumbdropError as exc:
            # Something listens there but does not speak our protocol properly; do not steal it blindly.
            raise AgentAlreadyRunningError(
                f"{self.path} is in use ({exc})", hint="stop the other process, or give this agent its own local.state_dir"
            ) from None
        pid = info.get("pid", "?") if isinstance(info, dict) else "?"
        raise AgentAlreadyRunningError(
            f"another thumbdrop agent (pid {pid}) is already running with state dir {self.path.parent}",
            hint="stop it first ('thumbdrop status' shows it), or give this agent its own local.state_dir",
        )

    def stop(self) -> None:
        """Stop accepting; remove the socket file if it is still ours. Idempotent."""
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
            with contextlib.suppress(OSError):
                self._sock.close()
        with self._conns_lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._inode is not None:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._inode:
                    self.path.unlink()
            self._inode = None

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(max(0.05, deadline - time.monotonic()))
        with self._conns_lock:
            conns = list(self._conns)
        for t in conns:
            t.join(max(0.05, deadline - time.monotonic()))

    # --- serving ---------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.warning("control socket failed; the agent goes on without it", exc_info=True)
                return
            if not self._peer_allowed(conn):
                conn.close()
                continue
            with self._conns_lock:
                self._conns = [t for t in self._conns if t.is_alive()]
                self._serial += 1
                t = threading.Thread(target=self._handle, args=(conn,), name=f"agent-control-{self._serial}", daemon=True)
                self._conns.append(t)
            t.start()

    @staticmethod
    def _peer_allowed(conn: socket.socket) -> bool:
        peercred = getattr(socket, "SO_PEERCRED", None)
        if peercred is None:
            return True  # not Linux: the 0600 mode is the guard
        try:
            _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))
        except OSError:
            return False
        if uid in (os.getuid(), 0):
            return True
        log.warning("control socket: refused a connection from uid %d", uid)
        return False

    def _handle(self, conn: socket.socket) -> None:
        with self._conns_lock:
            if self._stop.is_set():
                conn.close()
                return
            self._open.add(conn)
        with conn:
            conn.settimeout(self.connection_timeout)
            reader = conn.makefile("rb")
            try:
                while not self._stop.is_set():
                    line = reader.readline(MAX_LINE + 1)
                    if not line:
                        return
                    if len(line) > MAX_LINE:
                        conn.sendall(_encode({"ok": False, "code": "bad-request", "error": "request line too long"}))
                        return
                    conn.sendall(_encode(self.answer(line)))
            except OSError as exc:  # the peer went away or timed out: nothing to answer
                log.debug("control connection closed: %s", exc)
            finally:
                reader.close()
                with self._conns_lock:
                    self._open.discard(conn)

    def answer(self, line: bytes) -> dict[str, Any]:
        """One request line in, one answer object out; never raises."""
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "code": "bad-request", "error": "not a JSON object"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "code": "bad-request", "error": 'expected {"cmd": NAME, "args": {...}}'}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "code": "bad-request", "error": "args must be an object"}
        cmd = request["cmd"]
        handler = self._handlers().get(cmd)
        if handler is None:
            return {"ok": False, "code": "unknown-command", "error": f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}"}
        try:
            return {"ok": True, "result": handler(args)}
        except CommandError as exc:
            return {"ok": False, "code": exc.code, "error": exc.message}
        except ThumbdropError as exc:
            return {"ok": False, "code": "failed", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a bug in one command must not take the control server down; logged in full
            log.exception("control command %r failed", cmd)
            return {"ok": False, "code": "internal", "error": f"{type(exc).__name__}: {exc}"}

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        t = self.target
        return {
            "info": lambda _a: self.info(),
            "status": lambda a: self.status(a),
            "queues": lambda _a: queue_depths(t.cfg, t.backend),
            "pause": lambda _a: _then(self._running(t.pause), lambda: t.status.snapshot()["state"]),
            "resume": lambda _a: _then(self._running(t.resume), lambda: t.status.snapshot()["state"]),
            "sync-now": lambda _a: _then(self._running(t.sync_now), lambda: {"triggered": True}),
            "retry": lambda a: _then(self._running(lambda: None), lambda: retry_item(t, a)),
            "sync": lambda a: self._start_sync(a),
            "sync-status": lambda a: self._sync_call("sync_state", a, wait=_number(a.get("wait"), 0.0)),
            "sync-cancel": lambda a: _then(lambda: self._sync_call("cancel_sync", a), lambda: {"cancelled": True}),
            "cleanup-now": lambda a: _then(
                self._running(lambda: None), lambda: cleanup_now(t, dry_run=bool(a.get("dry_run", True)))
            ),
            "dlq-redrive": lambda _a: _then(self._running(lambda: None), lambda: redrive_dead_letters(t)),
            "stop": lambda _a: _then(t.request_stop, lambda: {"stopping": True}),
        }

    def status(self, args: dict[str, Any]) -> StatusSnapshot:
        """The snapshot; with ``after`` (a ``version`` seen before), wait up to ``wait`` s for a newer one."""
        after = args.get("after")
        if after is not None:
            if not isinstance(after, int) or isinstance(after, bool):
                raise CommandError("bad-request", "status: 'after' must be an integer (a status version)")
            wait = args.get("wait", 10.0)
            if not isinstance(wait, (int, float)) or isinstance(wait, bool) or wait < 0:
                raise CommandError("bad-request", "status: 'wait' must be a number of seconds >= 0")
            self.target.status.wait_change(after, min(float(wait), MAX_STATUS_WAIT, self.connection_timeout / 2))
        return self.target.status.snapshot()

    def _start_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        start = getattr(self.target, "start_sync", None)
        if start is None:
            raise CommandError("unavailable", "this agent cannot run a sync on request")
        seconds = args.get("seconds")
        holder: list[int] = []
        self._running(lambda: holder.append(start(None if seconds is None else _number(seconds, 0.0))))()
        return {"id": holder[0]}

    def _sync_call(self, method: str, args: dict[str, Any], **extra: Any) -> Any:
        fn = getattr(self.target, method, None)
        if fn is None:
            raise CommandError("unavailable", "this agent cannot run a sync on request")
        try:
            job_id = int(args.get("id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise CommandError("bad-request", "sync commands need an integer 'id'") from None
        return fn(job_id, **extra)

    def _running(self, action: Callable[[], None]) -> Callable[[], None]:
        """``action``, refused once the agent is stopping (a pause then would hide "stopping" from status)."""

        def guarded() -> None:
            stop = getattr(self.target, "stop_event", None)
            if stop is not None and stop.is_set():
                raise CommandError("stopping", "the agent is stopping")
            action()

        return guarded

    def info(self) -> dict[str, Any]:
        """Who answers: enough for a client (the tray) to find the agent's folders."""
        cfg = self.target.cfg
        return {
            "pid": os.getpid(),
            "version": __version__,
            "config": cfg.origin,
            "state_dir": str(self.target.state_dir),
            "roles": list(self.target.status.roles),
            "inbox": list(cfg.watch.folders),
            "thumbnails_dir": cfg.local.thumbnails_dir,
        }


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _then(action: Callable[[], None], result: Callable[[], Any]) -> Any:
    action()
    return result()


def _encode(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, default=str) + "\n").encode("utf-8")
