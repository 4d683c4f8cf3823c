"""The embedded local backend: moto's server on 127.0.0.1, in its own process.

Why its own process: moto's server shares the GIL with the agent when both run
in one process (137 uploads/s measured) against 216/s in a process of its own.

Lifetime: the child exits when its stdin closes, so it dies with the process
that started it, even on SIGKILL. Discovery: the owner writes
``local-backend.json`` in the state dir; a second thumbdrop command (status,
sync, cleanup) started meanwhile finds it there and talks to the same server
instead of starting an empty one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import BackendError
from agent.state.files import atomic_write
from agent.state.processes import pid_alive
from agent.state.status import UMASK_PERMS

log = logging.getLogger(__name__)
DISCOVERY_FILE = "local-backend.json"


@dataclass
class LocalBackend:
    endpoint_url: str
    owned: bool
    process: subprocess.Popen[bytes] | None = None
    discovery: Path | None = None

    def stop(self) -> None:
        """Stop the server if this process owns it; harmless otherwise or when repeated."""
        if not self.owned:
            return
        if self.discovery is not None:
            with contextlib.suppress(FileNotFoundError, OSError):
                data = json.loads(self.discovery.read_text())
                if data.get("owner_pid") == os.getpid():
                    self.discovery.unlink()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.owned = False


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def find_running(state_dir: Path) -> str | None:
    """The endpoint of a local backend another thumbdrop process owns, if one is up."""
    path = state_dir / DISCOVERY_FILE
    try:
        data = json.loads(path.read_text())
        port, owner = int(data["port"]), int(data["owner_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if owner != os.getpid() and pid_alive(owner) and _answers(port):
        return f"http://127.0.0.1:{port}"
    return None


def attach_or_start(state_dir: Path, *, publish: bool = True) -> LocalBackend:
    """Reach the running local backend, or start one owned by this process.

    ``publish``: record the new server so later commands find it (off for
    throwaway processes such as tests' subprocesses that must stay isolated).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    lock_path = state_dir / "local-backend.lock"
    with open(lock_path, "a+") as lock:
        # Two commands starting at once must not both start a server.
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = find_running(state_dir)
        if running:
            log.info("using the embedded backend already running at %s", running)
            return LocalBackend(endpoint_url=running, owned=False)
        backend = start_server()
        if publish:
            discovery = state_dir / DISCOVERY_FILE
            port = int(backend.endpoint_url.rsplit(":", 1)[1])
            found = {"port": port, "owner_pid": os.getpid(), "server_pid": backend.process.pid}  # type: ignore[union-attr]
            atomic_write(discovery, json.dumps(found), perms=UMASK_PERMS)
            backend.discovery = discovery
        return backend


def start_server(timeout: float = 30.0) -> LocalBackend:
    """Start moto's server in a child process on a free loopback port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cloud.local_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal goes to the agent, which stops it in order
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    # The child prints "PORT <n>" once it listens.
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(b"PORT ") or not line:
            break
    if not line.startswith(b"PORT "):
        proc.kill()
        proc.wait()
        raise BackendError(
            "the embedded local backend did not start",
            hint="install it with: pip install 'thumbdrop[local]' (it needs moto[server])",
        )
    port = int(line.split()[1])
    log.info("embedded backend started on 127.0.0.1:%d (pid %d)", port, proc.pid)
    return LocalBackend(endpoint_url=f"http://127.0.0.1:{port}", owned=True, process=proc)
