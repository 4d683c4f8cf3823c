"""The embedded backend: a moto server child process, found by other processes, dying with its owner."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from agent.cloud.local_backend import DISCOVERY_FILE, LocalBackend, attach_or_start, find_running

REPO_ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def exited(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie (its parent, not us, reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def answers(endpoint: str) -> bool:
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="thumbdrop-local",
        aws_secret_access_key="thumbdrop-local",
    )
    s3.create_bucket(Bucket="probe-bucket")
    return "probe-bucket" in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def find_from_other_process(state_dir: Path) -> str:
    code = "import sys; from pathlib import Path; from agent.cloud.local_backend import find_running; print(find_running(Path(sys.argv[1])))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(state_dir)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO_ROOT,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture()
def local_backend(tmp_path: Path) -> Iterator[LocalBackend]:
    backend = attach_or_start(tmp_path / "state")
    try:
        yield backend
    finally:
        backend.stop()
        if backend.process is not None and backend.process.poll() is None:
            backend.process.kill()
            backend.process.wait()


def test_start_find_from_another_process_and_stop(local_backend: LocalBackend, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert local_backend.owned
    assert local_backend.endpoint_url.startswith("http://127.0.0.1:")
    assert local_backend.process is not None
    server_pid = local_backend.process.pid
    assert answers(local_backend.endpoint_url)

    discovery = state / DISCOVERY_FILE
    data = json.loads(discovery.read_text())
    assert data == {"port": int(local_backend.endpoint_url.rsplit(":", 1)[1]), "owner_pid": os.getpid(), "server_pid": server_pid}
    assert not [p for p in state.iterdir() if "tmp" in p.name]  # written whole: no temp file left
    # The owner itself is not "another process": find_running is for the others.
    assert find_running(state) is None
    assert find_from_other_process(state) == local_backend.endpoint_url

    local_backend.stop()
    assert local_backend.process.poll() is not None, "the server child must have exited"
    assert not discovery.exists()
    assert find_from_other_process(state) == "None"
    local_backend.stop()  # harmless when repeated


def test_unpublished_backend_leaves_no_discovery_file(tmp_path: Path) -> None:
    backend = attach_or_start(tmp_path, publish=False)
    try:
        assert backend.owned
        assert not (tmp_path / DISCOVERY_FILE).exists()
        assert find_from_other_process(tmp_path) == "None"
    finally:
        backend.stop()
    assert backend.process is not None and backend.process.poll() is not None


def test_stale_discovery_file_is_ignored(tmp_path: Path) -> None:
    # An owner that died long ago (pid 1 is alive, but nothing listens on port 9 of loopback).
    (tmp_path / DISCOVERY_FILE).write_text(json.dumps({"port": 9, "owner_pid": 1, "server_pid": 2}))
    assert find_running(tmp_path) is None
    (tmp_path / DISCOVERY_FILE).write_text("not json")
    assert find_running(tmp_path) is None


OWNER = """
import sys, time
from pathlib import Path
from agent.cloud.local_backend import attach_or_start
backend = attach_or_start(Path(sys.argv[1]))
print(backend.endpoint_url, backend.process.pid, flush=True)
time.sleep(120)
"""


def test_server_dies_with_its_owner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(state)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=REPO_ROOT,
    )
    server_pid = 0
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline().split()
        assert len(line) == 2, f"owner printed {line!r}"
        endpoint, server_pid = line[0], int(line[1])
        assert answers(endpoint)
        assert find_running(state) == endpoint  # we are another process here
        assert not exited(server_pid)

        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert wait_until(lambda: exited(server_pid), timeout=8), "the server outlived its SIGKILLed owner"
        assert find_running(state) is None
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        if server_pid:
            kill_quietly(server_pid)
