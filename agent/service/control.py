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
import importlib.util
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from agent import __version__
from agent.config.model import Config
from agent.errors import ThumbdropError, UsageError
from agent.state.status import Status, StatusSnapshot

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024
# AF_UNIX paths longer than this do not fit sockaddr_un (108 bytes with the NUL, less on BSDs).
_MAX_SUN_PATH = 100
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


class Controllable(Protocol):
    """What the control server needs from the agent (a fake in tests)."""

    cfg: Config
    status: Status
    state_dir: Path
    backend: Any

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def sync_now(self) -> None: ...
    def request_stop(self) -> None: ...


class AgentAlreadyRunningError(UsageError):
    title = "Agent already running"


class CommandError(Exception):
    """A request the agent answers with ``ok: false``; ``code`` is stable for programs, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


@contextlib.contextmanager
def sun_path(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits sockaddr_un, even under a deep (pytest, $HOME) state dir.

    Linux resolves ``/proc/self/fd/N/name`` through an open directory descriptor, so a long
    directory costs nothing; elsewhere the path is used as it is.
    """
    text = str(path)
    if len(text) <= _MAX_SUN_PATH or not Path("/proc/self/fd").is_dir():
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def feature_available(module: str) -> bool:
    """Whether an optional part of the pipeline (built by another issue) is in this install."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


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
        from agent.service.control_client import AgentNotRunningError, ControlClient

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
        """Who answers: enough for a client (the tray) to find the agent's folders and features."""
        cfg = self.target.cfg
        return {
            "pid": os.getpid(),
            "version": __version__,
            "config": cfg.origin,
            "state_dir": str(self.target.state_dir),
            "roles": list(self.target.status.roles),
            "inbox": list(cfg.watch.folders),
            "thumbnails_dir": cfg.local.thumbnails_dir,
            "features": {"cleanup": feature_available(CLEANER_MODULE), "dlq": feature_available(DLQ_MODULE)},
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


# --- the commands that reach into pipeline parts other issues build ---------------------

CLEANER_MODULE = "agent.pipeline.cleanup_run"
DLQ_MODULE = "agent.cloud.dlq"
PLAN_ITEMS_SHOWN = 20
_cleanup_lock = threading.Lock()  # one cleanup at a time per agent, whoever asks


def cleanup_now(target: Controllable, *, dry_run: bool) -> dict[str, Any]:
    """Apply the cleanup policy now, or (dry run) count what it would delete. Never forces past the mass-delete guard."""
    if not feature_available(CLEANER_MODULE):
        raise CommandError("unavailable", "cleanup is not available in this version of thumbdrop")
    from datetime import UTC, datetime

    from agent.errors import MassDeleteError
    from agent.pipeline.cleanup_run import execute, plan_cleanup

    if not _cleanup_lock.acquire(blocking=False):
        raise CommandError("busy", "a cleanup is already running")
    try:
        stop = getattr(target, "stop_event", None)
        journal = getattr(target, "journal", None)
        plan = plan_cleanup(
            target.cfg,
            target.backend,
            now=datetime.now(UTC),
            uploaded_from=_uploaded_from(target),
            recorded_under=journal.uploads_under if journal is not None else None,
            accepted=journal.folder_identity if journal is not None else None,
            stop=stop,
        )
        totals: dict[str, Any] = {"objects": len(plan.deletions), "bytes": plan.total_bytes}
        if dry_run:
            return totals | {
                "problems": list(plan.problems),
                "notes": list(plan.notes),
                "items": [d.as_dict() for d in plan.deletions[:PLAN_ITEMS_SHOWN]],
            }
        try:
            outcome = execute(plan, target.cfg, target.backend, stop=stop)
        except MassDeleteError as exc:
            raise CommandError("guard", f"{exc.message} ({exc.hint})" if exc.hint else exc.message) from None
        for d, error in outcome.errors:
            target.status.fail(f"{d.bucket}:{d.key}", error, "cleaner")
        return {
            "deleted": len(outcome.done),
            "bytes": sum(d.size for d in outcome.done),
            "failed": len(outcome.errors),
            "stopped": outcome.stopped,
        }
    finally:
        _cleanup_lock.release()


def _uploaded_from(target: Controllable) -> Callable[[str], str | None] | None:
    """The journal's record of which key a local path was uploaded to (the cleaner's proof a file was ours)."""
    journal = getattr(target, "journal", None)
    if journal is None:
        return None

    def lookup(path: str) -> str | None:
        rec = journal.upload(path)
        return rec.key if rec is not None else None

    return lookup


def queue_depths(cfg: Config, backend: Any) -> dict[str, Any]:
    """Waiting, in-flight and dead-lettered messages per queue (None: the queue is missing)."""
    from agent.service.runtime import queue_depths as depths

    return dict(depths(cfg, backend))


def retry_item(target: Controllable, args: dict[str, Any]) -> dict[str, Any]:
    """Try one failed item again, by the role that failed it; it leaves the failures list (and comes back if it fails again)."""
    from agent.cloud.errors import call
    from agent.cloud.events import s3_event_body
    from agent.pipeline.keys import Layout
    from agent.service.runtime import queue_urls

    name, role = args.get("name"), args.get("role")
    if not isinstance(name, str) or not name or not isinstance(role, str):
        raise CommandError("bad-request", 'retry needs {"name": ITEM, "role": ROLE} as listed in the status failures')
    listed = [f for f in target.status.snapshot()["failures"] if f["name"] == name and f["role"] == role]
    if not listed:
        raise CommandError("not-found", f"{name} ({role}) is not in the failures list (retried already, or it went through)")
    layout = Layout.of(target.cfg)
    how: str
    if role == "uploader":
        uploader = getattr(target, "uploader", None)
        if uploader is None:
            raise CommandError("unavailable", "this agent does not run the uploader role")
        uploader.touch(Path(name))  # uploaded again once it has settled, as if it had just changed
        how = "queued for upload"
    elif role == "puller":
        rel = layout.rel_of_thumb_key(name)
        puller = getattr(target, "puller", None)
        if rel is None or puller is None:
            raise CommandError("unavailable", f"{name} cannot be pulled by this agent (not a thumbnail key, or no puller role)")
        target.status.resolved(name, role)
        puller.reconcile(only_rels={rel})  # a failure again is listed again by the puller itself
        return {"retried": name, "how": "pulled again"}
    elif role == "worker":
        rel = layout.rel_of_source_key(name)
        if rel is None:
            raise CommandError("unavailable", f"{name} is not a key under source.prefix")
        # The marker makes the worker repeat its verdict for the same content; without it the image is decoded afresh.
        with contextlib.suppress(ThumbdropError):
            call(
                f"clear the failure marker of {name}",
                target.backend.s3.delete_object,
                Bucket=target.cfg.thumbnails.bucket,
                Key=layout.failure_key(rel),
            )
        handoff = getattr(target, "handoff", None)
        if target.cfg.queues.mode == "poll":
            if handoff is not None and getattr(handoff, "worker", None) is not None:
                handoff.thumbnail(rel)
                how = "handed to the worker again"
            else:
                how = "marker removed: the next listing tries it again"
            target.status.resolved(name, role)
            return {"retried": name, "how": how}
        urls = queue_urls(target.cfg, target.backend)
        if urls.events is None:
            raise CommandError("unavailable", "the events queue does not exist (run 'thumbdrop setup')")
        call(
            f"send {name} to the worker again",
            target.backend.sqs.send_message,
            QueueUrl=urls.events,
            MessageBody=s3_event_body(target.cfg.source.bucket, name),
        )
        how = "sent to the worker again"
    else:
        raise CommandError("unavailable", f"items failed by the {role} cannot be retried one by one; use 'Retry all'")
    target.status.resolved(name, role)
    return {"retried": name, "how": how}


def redrive_dead_letters(target: Controllable) -> dict[str, Any]:
    """Send dead-lettered messages back to their queues for another try."""
    if not feature_available(DLQ_MODULE):
        raise CommandError("unavailable", "retrying dead-lettered items is not available in this version of thumbdrop")
    from agent.cloud.dlq import redrive
    from agent.cloud.provision import dlq_name
    from agent.service.runtime import queue_urls

    cfg = target.cfg
    out: dict[str, Any] = {"sent_back": 0, "failed": 0, "moving": 0, "queues": {}}
    if cfg.queues.mode == "poll":  # no queues: the failure markers go, and the next listing retries them
        from agent.pipeline.poll import clear_markers, failure_markers

        rows = failure_markers(target.backend.s3, cfg)
        removed, failed = clear_markers(target.backend.s3, cfg, [r["marker"] for r in rows])
        out.update(sent_back=removed, failed=len(failed))
        return out
    urls = queue_urls(cfg, target.backend)
    for name, dlq_url, source_url in (
        (dlq_name(cfg.queues.events), urls.events_dlq, urls.events),
        (dlq_name(cfg.queues.pull), urls.pull_dlq, urls.pull),
    ):
        if dlq_url is None or source_url is None:
            continue
        result = redrive(target.backend, dlq_url=dlq_url, source_url=source_url, queue=name)
        out["sent_back"] += result.moved
        out["failed"] += result.failed
        out["moving"] += 1 if result.task else 0  # the backend moves them itself (StartMessageMoveTask)
        out["queues"][name] = {"sent_back": result.moved, "failed": result.failed, "task": result.task}
    return out
