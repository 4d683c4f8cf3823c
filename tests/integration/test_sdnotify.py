"""systemd's notify protocol, seen from systemd's side: `thumbdrop run` under a NOTIFY_SOCKET made here.

One agent run (module fixture) goes through start, a SIGHUP with a broken config, a SIGHUP with a
changed one, and SIGTERM; the tests read what it sent and what it logged. The same run carries AWS
credentials in its environment and `verify_tls: false`, for the logging tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

from agent.service.control_client import ControlClient
from agent.service.sdnotify import Notifier, watchdog_usec

REPO = Path(__file__).resolve().parents[2]
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@dataclass
class Run:
    messages: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, datagram)
    marks: dict[str, float] = field(default_factory=dict)
    metrics: str = ""
    state_after_reload: str = ""
    rc: int | None = None
    log: str = ""

    def after(self, mark: str, until: str | None = None) -> list[str]:
        start, end = self.marks[mark], self.marks[until] if until else float("inf")
        return [m for t, m in self.messages if start <= t < end]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def run(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    tmp = tmp_path_factory.mktemp("sdnotify")
    port = _free_port()
    cfg = {
        "backend": {"endpoint_url": moto_server, "verify_tls": False},
        "queues": {"wait_seconds": 1},
        "watch": {"folders": [str(tmp / "inbox")], "rescan_seconds": 0},
        "local": {"thumbnails_dir": str(tmp / "thumbs"), "state_dir": str(tmp / "state")},
        "roles": ["uploader", "worker", "puller"],
        "metrics": {"port": port},
    }
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    sock_path = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    env = dict(
        os.environ,
        NOTIFY_SOCKET=str(sock_path),
        WATCHDOG_USEC="2000000",
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
    )
    log_path = tmp / "agent.log"
    result = Run()
    t0 = time.monotonic()

    def wait_for(text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536).decode()
            except TimeoutError:
                continue
            result.messages.append((time.monotonic() - t0, data))
            if text in data.split("\n"):
                return
        raise AssertionError(f"no {text!r} within {timeout} s; got {[m for _, m in result.messages]}\n{log_path.read_text()}")

    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "-v", "--config", str(config), "run"], cwd=REPO, env=env, stdout=log, stderr=log
        )
    try:
        wait_for("READY=1")
        result.marks["ready"] = time.monotonic() - t0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            result.metrics = resp.read().decode()
        wait_for("WATCHDOG=1", 5)
        # A broken config: the agent says it reloads, keeps the old config, and is ready again.
        config.write_text("queues:\n  max_receives: 0\n  bogus: 1\n")
        result.marks["hup1"] = time.monotonic() - t0
        proc.send_signal(signal.SIGHUP)
        wait_for("READY=1", 20)
        # Paused (as 'thumbdrop pause' does), then a valid, changed config: the agent restarts with it, still paused.
        control = ControlClient(tmp / "state")
        assert control.call("pause") == "paused"
        cfg["queues"]["visibility_timeout"] = 90
        config.write_text(yaml.safe_dump(cfg))
        result.marks["hup2"] = time.monotonic() - t0
        proc.send_signal(signal.SIGHUP)
        wait_for("READY=1", 30)
        result.state_after_reload = control.call("status")["state"]
        result.marks["term"] = time.monotonic() - t0
        proc.send_signal(signal.SIGTERM)
        wait_for("STOPPING=1", 20)
        result.rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    result.log = log_path.read_text()
    yield result


def test_ready_once_the_roles_run_with_live_status(run: Run) -> None:
    ready = [m for t, m in run.messages if t <= run.marks["ready"] and "READY=1" in m.split("\n")]
    assert ready, run.messages
    assert any(line.startswith("STATUS=") for line in ready[0].split("\n"))
    statuses = [line for _, m in run.messages for line in m.split("\n") if line.startswith("STATUS=")]
    assert any("uploaded" in s and "thumbnailed" in s and "pulled" in s for s in statuses), statuses
    assert "thumbdrop agent running" in run.log


def test_watchdog_pinged_at_half_the_interval(run: Run) -> None:
    pings = [t for t, m in run.messages if "WATCHDOG=1" in m.split("\n")]
    assert len(pings) >= 2
    # WATCHDOG_USEC=2 s: a ping about every second, never a gap systemd would kill us for.
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) < 2.0, gaps


def test_sighup_with_a_broken_config_keeps_running(run: Run) -> None:
    window = run.after("hup1", "hup2")
    lines = [line for m in window for line in m.split("\n")]
    assert "RELOADING=1" in lines
    assert any(line.startswith("MONOTONIC_USEC=") for line in lines)
    assert lines.index("READY=1") > lines.index("RELOADING=1")
    # Every problem of the new file is logged, and the old config stays.
    assert "queues.max_receives: must be between 1 and 1000, got 0" in run.log
    assert "queues.bogus: unknown key" in run.log
    assert "still running with the previous config" in run.log


def test_sighup_with_a_valid_config_restarts_the_agent(run: Run) -> None:
    lines = [line for m in run.after("hup2", "term") for line in m.split("\n")]
    assert lines.index("READY=1") > lines.index("RELOADING=1")
    assert "config reload: restarting the agent" in run.log
    assert run.log.count("thumbdrop agent running") == 2
    assert "reopening the backend" not in run.log  # the backend section did not change
    assert run.state_after_reload == "paused"  # a pause asked for before the reload holds


def test_sigterm_says_stopping_and_exits_0(run: Run) -> None:
    lines = [line for m in run.after("term") for line in m.split("\n")]
    assert "STOPPING=1" in lines
    assert run.rc == 0, run.log


def test_metrics_endpoint_while_running(run: Run) -> None:
    assert 'thumbdrop_files_total{event="uploaded"}' in run.metrics
    assert 'thumbdrop_queue_messages{queue="events",state="visible"}' in run.metrics
    assert "thumbdrop_duration_seconds_bucket" in run.metrics


def test_secrets_never_logged(run: Run) -> None:
    assert run.log.strip()
    assert KEY_ID not in run.log
    assert SECRET not in run.log


def test_tls_off_warned_exactly_once(run: Run) -> None:
    # Two reloads later, still the one warning.
    assert run.log.count("verify_tls is false") == 1, run.log


# --- the protocol in-process ---------------------------------------------------------------------


def test_abstract_namespace_socket() -> None:
    name = f"thumbdrop-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        n = Notifier("@" + name)
        n.send(READY=1, STATUS="two\nlines")
        n.close()
        assert sock.recv(4096).decode() == "READY=1\nSTATUS=two lines"


def test_no_socket_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.send(READY=1) is False


def test_watchdog_only_for_this_process() -> None:
    assert watchdog_usec({"WATCHDOG_USEC": "4000000"}) == 4000000
    assert watchdog_usec({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 4000000
    assert watchdog_usec({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "nonsense"}) is None
    assert Notifier("/x", watchdog_usec=4000000).watchdog_interval == 2.0
