"""Talk to a running agent over its control socket (``agent.service.control``).

``ControlClient(state_dir).call("status")`` returns the result or raises
``AgentNotRunningError`` (nobody answers: exit 3 for the CLI) or
``ControlCommandError`` (the agent answered "no", with its reason).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, cast

from agent.errors import EXIT_BACKEND, EXIT_ITEMS_FAILED, ThumbdropError
from agent.service.control_socket import MAX_LINE, socket_path, sun_path
from agent.state.status import StatusSnapshot, read_published

DEFAULT_TIMEOUT = 5.0


class AgentNotRunningError(ThumbdropError):
    exit_code = EXIT_BACKEND
    title = "No agent"


class ControlCommandError(ThumbdropError):
    """The agent refused or failed a command; ``code`` says which (``unavailable``, ``failed``, ...)."""

    exit_code = EXIT_ITEMS_FAILED
    title = "Agent refused"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ControlClient:
    def __init__(self, state_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.state_dir = state_dir
        self.path = socket_path(state_dir)
        self.timeout = timeout

    def call(self, cmd: str, *, timeout: float | None = None, **args: Any) -> Any:
        """Send one command and return its result; a fresh connection per call keeps callers thread-safe."""
        request = (json.dumps({"cmd": cmd, "args": args}) + "\n").encode("utf-8")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout if timeout is None else timeout)
            try:
                with sun_path(self.path) as addr:
                    sock.connect(addr)
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
                raise self._not_running() from exc
            except TimeoutError as exc:
                raise AgentNotRunningError(
                    f"the agent's control socket {self.path} did not accept a connection within {sock.gettimeout()} s",
                    hint="the agent may be hung: see its log, or restart it",
                ) from exc
            except OSError as exc:
                raise AgentNotRunningError(f"cannot reach the agent at {self.path}: {exc}") from exc
            try:
                sock.sendall(request)
                line = sock.makefile("rb").readline(MAX_LINE * 64)
            except TimeoutError as exc:
                raise ControlCommandError("timeout", f"the agent did not answer {cmd!r} within {sock.gettimeout()} s") from exc
            except OSError as exc:
                raise AgentNotRunningError(f"the agent went away while answering {cmd!r}: {exc}") from exc
        if not line:
            raise AgentNotRunningError(f"the agent closed the connection without answering {cmd!r} (it may be stopping)")
        try:
            answer = json.loads(line)
        except ValueError as exc:
            raise ControlCommandError("bad-answer", f"the agent's answer to {cmd!r} is not JSON") from exc
        if not isinstance(answer, dict):
            raise ControlCommandError("bad-answer", f"the agent's answer to {cmd!r} is not an object")
        if not answer.get("ok"):
            raise ControlCommandError(str(answer.get("code", "failed")), str(answer.get("error", "failed")))
        return answer.get("result")

    def _not_running(self) -> AgentNotRunningError:
        return AgentNotRunningError(
            f"no agent is running (no control socket answers at {self.path})",
            hint="start one with 'thumbdrop run' or 'thumbdrop tray'",
        )

    def running(self) -> bool:
        try:
            self.call("info", timeout=min(self.timeout, 2.0))
        except ThumbdropError:
            return False
        return True


def read_status(state_dir: Path) -> StatusSnapshot | None:
    """The live status from the agent's socket; else the last published status.json; else None."""
    try:
        snapshot = ControlClient(state_dir, timeout=2.0).call("status")
    except ThumbdropError:
        return read_published(state_dir)
    return cast(StatusSnapshot, snapshot) if isinstance(snapshot, dict) else read_published(state_dir)
