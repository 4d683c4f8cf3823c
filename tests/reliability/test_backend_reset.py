"""A backend that comes back empty (a store restarted without persistence) while ``thumbdrop run`` works.

Issue 14 item 4: the agent used to log "queue does not exist" every few seconds for ever, and files that failed
meanwhile waited for the 300 s rescan. With ``backend.auto_setup`` it sets up again by itself, once, and
retries them at once; without it, it says once (log and status) what to run, and resumes once that is done.

The backend is a moto server in a subprocess of its own, stopped and started again empty on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.reliability.conftest import ImageCase, RelEnv, close_env, make_env, palette, wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
MISSING_LINE = "lost thumbdrop's buckets or queues"


class MotoProcess:
    """``python -m moto.server`` on a fixed port: restart() gives an empty backend at the same address."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def up() -> bool:
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{self.url}/moto-api/data.json", timeout=2).ok
            return False

        wait_for(up, 60, f"moto on port {self.port}", lambda: self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture()
def reset_env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RelEnv, MotoProcess]]:
    moto = MotoProcess(tmp_path)
    env = make_env(tmp_path, moto.url)
    try:
        yield env, moto
    finally:
        failed = any(getattr(getattr(request.node, f"rel_rep_{w}", None), "failed", False) for w in ("setup", "call"))
        close_env(env, failed)
        moto.stop()


def start(rel: RelEnv, auto_setup: bool) -> tuple[list[ImageCase], ImageCase]:
    """An agent that has thumbnailed a first image; returns (the images so far, the one to drop after the reset)."""
    rel.write_config({"backend": {"auto_setup": auto_setup}, "queues": {"wait_seconds": 2}})
    if not auto_setup:
        assert rel.cli("setup").rc == 0
    colours = palette(3)
    first = ImageCase("before/first.jpg", (400, 300), colours[0])
    first.write(rel.inbox)
    agent = rel.start_agent()
    agent.wait_ready()
    wait_for(lambda: (rel.thumbs / first.thumb_rel).is_file(), 60, "the first thumbnail", rel.diagnose)
    return [first], ImageCase("after/second.jpg", (300, 400), colours[1])


def missing_lines(rel: RelEnv) -> list[str]:
    return [line for line in rel.agents[-1].log().splitlines() if MISSING_LINE in line]


def error_lines(rel: RelEnv) -> list[str]:
    return [line for line in rel.agents[-1].log().splitlines() if " ERROR " in line or "does not exist" in line]


def test_auto_setup_sets_up_again_once_and_retries_at_once(reset_env: tuple[RelEnv, MotoProcess]) -> None:
    rel, moto = reset_env
    _before, second = start(rel, auto_setup=True)
    moto.restart()
    restarted = time.monotonic()
    second.write(rel.inbox)
    wait_for(
        lambda: (rel.thumbs / second.thumb_rel).is_file(),
        60,
        "the image dropped after the backend came back empty (well before the 300 s rescan)",
        rel.diagnose,
    )
    took = time.monotonic() - restarted
    print(f"thumbnail of the file dropped after the empty restart: {took:.1f} s")
    time.sleep(5)  # time for a loop, if there were one
    log = rel.agents[-1].log()
    assert log.count("setting them up again") == 1, rel.diagnose()
    assert log.count("set up again: buckets, queues and notifications are back") == 1, rel.diagnose()
    assert not [line for line in log.splitlines() if " ERROR " in line], rel.diagnose()
    assert rel.status()["agent"]["offline_since"] is None
    rc, _ = rel.agents[-1].terminate(timeout=20)
    assert rc == 0, rel.diagnose()


def test_without_auto_setup_it_says_once_what_to_run_and_resumes_after_setup(
    reset_env: tuple[RelEnv, MotoProcess],
) -> None:
    rel, moto = reset_env
    _before, second = start(rel, auto_setup=False)
    moto.restart()
    second.write(rel.inbox)
    wait_for(lambda: missing_lines(rel), 30, "the agent to say the resources are gone", rel.diagnose)
    time.sleep(15)  # several receive and upload retries: none may repeat it
    lines = missing_lines(rel)
    assert len(lines) == 1, "\n".join(lines)
    assert "run 'thumbdrop setup'" in lines[0]
    assert error_lines(rel) == lines, "\n".join(error_lines(rel))
    agent_status = rel.status()["agent"]
    assert "thumbdrop setup" in (agent_status.get("offline_reason") or ""), agent_status
    assert not (rel.thumbs / second.thumb_rel).exists()

    assert rel.cli("setup").rc == 0
    done = time.monotonic()
    wait_for(
        lambda: (rel.thumbs / second.thumb_rel).is_file(),
        45,
        "the waiting image once 'thumbdrop setup' ran (well before the 300 s rescan)",
        rel.diagnose,
    )
    print(f"thumbnail after 'thumbdrop setup': {time.monotonic() - done:.1f} s")
    wait_for(lambda: rel.status()["agent"]["offline_since"] is None, 30, "status to show the agent online", rel.diagnose)
    rc, _ = rel.agents[-1].terminate(timeout=20)
    assert rc == 0, rel.diagnose()
