"""The agent process the tray starts: ``python -m agent [--config C] run --log-file ...``, detached.

Detached (its own session) so it outlives a crashed tray; the next tray finds it
through the control socket and, thanks to the pid file, knows it started it.
Its log goes to ``agent.log`` in the state dir (rotated by the agent); what
logging never sees (a config error, a crash at import) lands in
``agent-console.log``, which the tray shows when the agent exits early.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from agent.service.control_client import AgentNotRunningError, ControlClient
from agent.state.files import atomic_write
from agent.state.processes import pid_alive
from agent.state.status import read_published

log = logging.getLogger(__name__)
PID_FILE = "tray-agent.pid"
LOG_FILE = "agent.log"
CONSOLE_FILE = "agent-console.log"
STOP_WAIT = 20.0  # seconds an owned agent has to drain and exit before it is killed


class AgentLauncher:
    def __init__(
        self,
        state_dir: Path,
        *,
        config: str | None,
        local: bool = False,
        verbosity: int = 0,
        env: Mapping[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.config = config
        self.local = local
        self.verbosity = verbosity
        self.env = dict(os.environ if env is None else env)
        # The agent runs the same code as this tray, even from a source checkout that is not installed.
        package_root = str(Path(__file__).resolve().parents[2])
        paths = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if package_root not in paths:
            self.env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
        self.python = python or sys.executable
        self.proc: subprocess.Popen[bytes] | None = None
        self.owned_pid: int | None = None

    def command(self) -> list[str]:
        argv = [self.python, "-m", "agent"]
        if self.config:
            argv += ["--config", str(Path(self.config).expanduser().resolve())]
        if self.local:
            argv.append("--local")
        if self.verbosity > 0:
            argv.append("-" + "v" * min(self.verbosity, 2))
        return [*argv, "run", "--log-file", str(self.state_dir / LOG_FILE)]

    def start(self) -> int:
        """Start a detached agent; return its pid."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = self.command()
        log.info("starting the agent: %s", " ".join(argv))
        with open(self.state_dir / CONSOLE_FILE, "wb") as console:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=str(Path.home()) if Path.home().is_dir() else "/",
                start_new_session=True,  # a Ctrl-C or a closed terminal of the tray does not reach the agent
            )
        self.owned_pid = self.proc.pid
        atomic_write(self.state_dir / PID_FILE, str(self.proc.pid))
        return self.proc.pid

    def adopt(self, pid: int) -> bool:
        """Whether the agent answering with ``pid`` is one this tray (or an earlier one) started."""
        if self.owned_pid == pid:
            return True
        try:
            recorded = int((self.state_dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return False
        if recorded == pid:
            self.owned_pid = pid
            return True
        return False

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.owned_pid is not None and pid_alive(self.owned_pid)

    @property
    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the owned agent to exit; True when it has (or none is owned)."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.owned_pid is not None and pid_alive(self.owned_pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def forget(self) -> None:
        """The owned agent is gone for good: drop the pid file so a later tray does not claim a reused pid."""
        with contextlib.suppress(OSError):
            recorded = int((self.state_dir / PID_FILE).read_text().strip())
            if recorded == self.owned_pid:
                (self.state_dir / PID_FILE).unlink()
        self.owned_pid = None
        self.proc = None

    def terminate(self) -> None:
        """SIGTERM (the agent drains and exits): for an agent that does not answer on its socket yet."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
        elif self.owned_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.owned_pid, signal.SIGTERM)

    def kill(self) -> None:
        """Last resort when a stop request went unanswered."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def console_tail(self, lines: int = 12) -> str:
        try:
            text = (self.state_dir / CONSOLE_FILE).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def exit_reason(self, code: int) -> str:
        """Why the agent this tray started is gone: its last fatal error, else what it printed, else the code."""
        published = read_published(self.state_dir)
        if published is not None and published.get("fatal"):
            return str(published["fatal"])
        tail = self.console_tail(lines=3)
        return tail or f"exit code {code}; see {self.state_dir / LOG_FILE}"

    def stop(self, client: ControlClient, wait: float = STOP_WAIT) -> None:
        """Stop the owned agent: ask on its socket (else a signal), wait for it to drain, kill it if it will not."""
        log.info("stopping the agent this tray started")
        try:
            client.call("stop")
        except AgentNotRunningError:
            self.terminate()  # still starting (no socket yet), or its socket is gone: a signal does it
        if not self.wait_exit(wait):
            log.warning("the agent did not stop within %.0f s; killing it", wait)
            self.kill()
        self.forget()
